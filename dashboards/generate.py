"""Write (or check) the dashboards' JSON next to their code: ``python -m driftline.dashboards.generate``."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from . import DASHBOARDS, JSON_DIR
from .common import render

__all__ = ["OUT_DIR", "main", "rendered"]

OUT_DIR = JSON_DIR


def rendered() -> dict[str, str]:
    """File name -> JSON text for every dashboard."""
    return {f"{name}.json": render(importlib.import_module(f"{__package__}.{name}").build()) for name in DASHBOARDS}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="exit 1 if the checked-in JSON is out of date")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    stale = []
    for fname, text in rendered().items():
        path = args.out / fname
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(fname)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python -m driftline.dashboards.generate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
