"""``driftline profile inspect``: what is inside a profile file."""

from __future__ import annotations

import argparse
import json
from typing import Any

from driftline.wire import read_profile_file

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="inspect profile files")
    psub = p.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    i = psub.add_parser("inspect", help="print rows, features, types and summary quantiles")
    i.add_argument("file", help="a profile file (from 'driftline reference build' or the spool)")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=_inspect)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _inspect(args: argparse.Namespace) -> int:
    prof = read_profile_file(args.file)
    d = prof.describe()
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"model {d['model']} version {d['model_version']} variant {d['variant']} source {d['source'] or '-'}")
    print(f"rows {d['rows']} (profiled {d['rows_profiled']}), "
          f"{len(d['features'])} features, {len(d['outputs'])} outputs")
    header = f"{'column':<24} {'role':<7} {'type':<11} {'count':>9} {'missing':>8}  summary"
    print(header)
    print("-" * len(header))
    for role, items in (("feature", d["features"]), ("output", d["outputs"])):
        for c in items:
            if c["type"] == "numeric":
                q = c["quantiles"]
                summary = (f"min {_fmt(c['min'])} p25 {_fmt(q['p25'])} p50 {_fmt(q['p50'])} "
                           f"p75 {_fmt(q['p75'])} max {_fmt(c['max'])}")
            else:
                top = ", ".join(f"{t['value']}:{t['count']}" for t in c["top"][:4])
                summary = f"~{c['distinct']} distinct; top {top}"
            print(f"{c['name'][:24]:<24} {role:<7} {c['type']:<11} {c['count']:>9} {c['missing']:>8}  {summary}")
    return 0
