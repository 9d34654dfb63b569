"""``driftline dashboards generate|push``: Grafana dashboards as code.

``push`` uploads the checked-in JSON through Grafana's HTTP API; the API token comes from
``GRAFANA_TOKEN`` (or ``DRIFTLINE_GRAFANA_TOKEN``), never from the command line.
"""

from __future__ import annotations

import argparse
import os

__all__ = ["TOKEN_VARIABLES", "register"]

TOKEN_VARIABLES = ("GRAFANA_TOKEN", "DRIFTLINE_GRAFANA_TOKEN")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboards", help="generate or upload the Grafana dashboards")
    dsub = p.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True)
    g = dsub.add_parser("generate", help="write the dashboards' JSON (default: next to their code)")
    g.add_argument("--out", help="folder to write into")
    g.add_argument("--check", action="store_true", help="exit 1 if the JSON is out of date")
    g.set_defaults(func=_generate)
    u = dsub.add_parser("push", help="upload the dashboards through the Grafana HTTP API",
                        description="Upload the four Driftline dashboards into a Grafana folder. The API token "
                                    "(a service account token with the Editor role) is read from GRAFANA_TOKEN "
                                    "or DRIFTLINE_GRAFANA_TOKEN.")
    u.add_argument("--grafana-url", required=True, help="e.g. http://grafana:3000 (or with a sub-path)")
    u.add_argument("--folder", default="Driftline", help="Grafana folder, created if missing [Driftline]")
    u.add_argument("--overwrite", action="store_true", help="replace dashboards that already exist")
    u.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request [10]")
    u.set_defaults(func=_push)


def _generate(args: argparse.Namespace) -> int:
    from driftline.errors import MissingExtraError

    try:
        from driftline.dashboards.generate import main
    except ImportError:
        raise MissingExtraError("grafana-foundation-sdk", "dashboards") from None
    argv = (["--out", args.out] if args.out else []) + (["--check"] if args.check else [])
    return main(argv)


def _push(args: argparse.Namespace) -> int:
    from driftline.dashboards import checked_in
    from driftline.dashboards.push import push_dashboards

    token = next((os.environ[v] for v in TOKEN_VARIABLES if os.environ.get(v)), None)
    urls = push_dashboards(args.grafana_url, token, checked_in(), folder=args.folder, overwrite=args.overwrite,
                           timeout=args.timeout)
    for url in urls:
        print(url)
    return 0
