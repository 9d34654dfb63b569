"""The ``driftline`` command: one entry point, one module per subcommand.

Each subcommand module defines ``register(subparsers)`` which adds its parser and sets
``func(args) -> int``. Errors the user can fix (:class:`~driftline.errors.DriftlineError`) print one
line and exit 2; Ctrl-C exits 130; nothing prints a traceback unless ``DRIFTLINE_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from driftline import __version__
from driftline.errors import DriftlineError

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

COMMAND_MODULES = [
    "reference",
    "profile",
    "drift",
    "sidecar",
    "replay",
    "service",
    "dashboards",
    "demo",
    "golden",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftline",
        description="Drift and canary monitoring for ML models on edge devices and in the cloud.",
    )
    parser.add_argument("--version", action="version", version=f"driftline {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        # each module imports its heavy dependencies only when its command runs
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except DriftlineError as exc:
        if os.environ.get("DRIFTLINE_DEBUG"):
            raise
        print(f"driftline: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
