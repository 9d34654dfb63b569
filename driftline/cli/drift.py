"""``driftline drift REFERENCE CURRENT``: compare two data files or profile files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..datafiles import DataFile
from ..errors import DataFileError
from ..profile import ProfileConfig, StreamKey, WindowProfile
from ..profiling import profile_file
from ..stats import DriftConfig, compare_profiles
from ..wire import MAGIC, read_profile_file
from ._args import add_profile_config_args, profile_config_from_args
from .progress import ProgressBar

__all__ = ["load_profile", "register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "drift",
        help="compare two data sets or profiles: feature drift, prediction shift, data quality",
        description="Compare CURRENT with REFERENCE. Each is a data file (CSV, Parquet, JSON Lines) or a "
        "profile file. Exit 0 whether or not drift is found; 2 on bad input.",
    )
    p.add_argument("reference", help="reference data or profile file")
    p.add_argument("current", help="current data or profile file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_profile_config_args(p)
    p.add_argument("--method", choices=["ks", "psi", "jensen_shannon", "wasserstein", "hellinger"], default="ks",
                   help="effect size that decides numeric drift (default ks)")
    p.add_argument("--threshold", type=float, default=None, help="threshold for --method (default per method)")
    p.add_argument("--alpha", type=float, default=0.05, help="false discovery rate (default 0.05)")
    p.add_argument("--min-rows", type=int, default=30, help="fewer values than this: insufficient_data")
    p.add_argument("--bins", type=int, default=10, help="reference-quantile bins for PSI/JS/Hellinger")
    p.add_argument("--drift-share", type=float, default=0.5,
                   help="share of drifted features that makes dataset drift (default 0.5)")
    p.set_defaults(func=_run)


def load_profile(path: str, config: ProfileConfig, outputs: list[str], role: str) -> WindowProfile:
    """A profile file as is, or a data file profiled on the fly (with a progress bar)."""
    pth = Path(path)
    if not pth.is_file():
        raise DataFileError(f"{pth}: no such file")
    with pth.open("rb") as fh:
        head = fh.read(4)
    if head == MAGIC:
        return read_profile_file(pth)
    data = DataFile(pth)
    with ProgressBar(data.total, f"profiling {role} {pth.name}", unit=data.unit) as bar:
        return profile_file(data, StreamKey.of("cli", role, role), config, outputs=outputs,
                            on_progress=bar.update_to)


def _run(args: argparse.Namespace) -> int:
    cfg = profile_config_from_args(args)
    try:
        drift_cfg = DriftConfig(
            numeric_method=args.method,
            thresholds={args.method: args.threshold} if args.threshold is not None else {},
            alpha=args.alpha, min_rows=args.min_rows, bins=args.bins, drift_share_threshold=args.drift_share,
        )
    except ValueError as exc:
        raise DataFileError(str(exc)) from None
    ref = load_profile(args.reference, cfg, args.output, "reference")
    cur = load_profile(args.current, cfg, args.output, "current")
    report = compare_profiles(ref, cur, drift_cfg).to_dict()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_table(report))
    return 0


def _f(v: Any, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def render_table(report: dict[str, Any]) -> str:
    """The human view of a drift report."""
    lines = [
        f"dataset drift: {'YES' if report['dataset_drift'] else 'no'}   drift share: {report['drift_share']:.0%}   "
        f"reference rows: {report['reference_rows']:,}   current rows: {report['current_rows']:,}",
        "",
        f"{'column':<24} {'role':<7} {'type':<11} {'status':<17} {'method':<8} {'effect':>7} {'p(adj)':>9} "
        f"{'ks':>6} {'psi':>7} {'js':>6} {'tvd':>6}",
    ]
    lines.append("-" * len(lines[-1]))
    for role, items in (("feature", report["features"]), ("output", report["outputs"])):
        for f in items:
            s = f["scores"]
            lines.append(
                f"{f['name'][:24]:<24} {role:<7} {f['type']:<11} {f['status'].upper() if f['drift_detected'] else f['status']:<17} "
                f"{f['method']:<8} {_f(f['effect']):>7} {_f(f['p_value'], '.2e'):>9} {_f(s.get('ks')):>6} "
                f"{_f(s.get('psi')):>7} {_f(s.get('jensen_shannon')):>6} {_f(s.get('tvd')):>6}"
            )
    issues = report["data_quality"]["issues"]
    if issues:
        lines += ["", "data quality:"]
        for i in issues:
            extra = ", ".join(f"{k}={v}" for k, v in i.items() if k not in ("column", "signal"))
            lines.append(f"  {i['signal']:<18} {i['column']}  {extra}")
    return "\n".join(lines)
