"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse

__all__ = ["column_list", "add_profile_config_args", "profile_config_from_args"]


def column_list(text: str) -> list[str]:
    """Parse ``a,b,c`` into names, ignoring blanks."""
    return [c.strip() for c in text.split(",") if c.strip()]


def add_profile_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--categorical", type=column_list, default=[], metavar="COLS",
                   help="comma-separated columns to treat as categorical (otherwise inferred)")
    p.add_argument("--numeric", type=column_list, default=[], metavar="COLS",
                   help="comma-separated columns to treat as numeric (otherwise inferred)")
    p.add_argument("--output", type=column_list, default=[], metavar="COLS",
                   help="comma-separated columns that are model outputs (scores, predicted labels)")
    p.add_argument("--kll-k", type=int, default=400, metavar="K",
                   help="KLL sketch size k (default 400; larger = more accurate and bigger)")


def profile_config_from_args(args: argparse.Namespace):  # -> ProfileConfig
    from driftline.profile import ProfileConfig

    return ProfileConfig(
        kll_k=args.kll_k,
        categorical=frozenset(args.categorical),
        numeric=frozenset(args.numeric),
    )
