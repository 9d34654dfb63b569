"""``driftline dashboards generate|push``: Grafana dashboards as code."""

from __future__ import annotations

import argparse
import os

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboards", help="generate or upload the Grafana dashboards")
    dsub = p.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True)
    g = dsub.add_parser("generate", help="write the dashboards' JSON (default: next to their code)")
    g.add_argument("--out", help="folder to write into")
    g.add_argument("--check", action="store_true", help="exit 1 if the JSON is out of date")
    g.set_defaults(func=_generate)
    u = dsub.add_parser("push", help="upload the dashboards through the Grafana HTTP API",
                        description="Token from GRAFANA_TOKEN or DRIFTLINE_GRAFANA_TOKEN.")
    u.add_argument("--grafana-url", required=True, help="e.g. http://grafana:3000")
    u.add_argument("--folder", default="Driftline", help="Grafana folder (created if missing)")
    u.add_argument("--no-overwrite", dest="overwrite", action="store_false", help="refuse to replace dashboards")
    u.set_defaults(func=_push)


def _generate(args: argparse.Namespace) -> int:
    from ..errors import MissingExtraError

    try:
        from driftline.dashboards.generate import main
    except ImportError:
        raise MissingExtraError("grafana-foundation-sdk", "dashboards") from None
    argv = (["--out", args.out] if args.out else []) + (["--check"] if args.check else [])
    return main(argv)


def _push(args: argparse.Namespace) -> int:
    from pathlib import Path

    import driftline.dashboards as pkg
    from driftline.dashboards import DASHBOARDS
    from driftline.dashboards.push import push_dashboards

    folder = Path(pkg.__file__).resolve().parent
    dashboards = {n: (folder / f"{n}.json").read_text() for n in DASHBOARDS}
    token = os.environ.get("GRAFANA_TOKEN") or os.environ.get("DRIFTLINE_GRAFANA_TOKEN")
    for url in push_dashboards(args.grafana_url, token, dashboards, folder=args.folder, overwrite=args.overwrite):
        print(url)
    return 0
