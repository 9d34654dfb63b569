"""``driftline drift REFERENCE CURRENT``: compare two data files or profile files."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from driftline.columns import CategoricalColumn
from driftline.datafiles import DataFile
from driftline.errors import ConfigError, DataFileError
from driftline.profile import ProfileConfig, StreamKey, WindowProfile, has_typed_values
from driftline.profiling import profile_file
from driftline.stats import DriftConfig, compare_profiles
from driftline.stats.decision import CATEGORICAL_METHODS, DEFAULT_THRESHOLDS, NUMERIC_METHODS
from driftline.wire import MAGIC, read_profile_file

from ._args import add_profile_config_args, profile_config_from_args
from .progress import ProgressBar

_DEFAULTS = DriftConfig()  # the decision rule's defaults live in one place

__all__ = ["drift_config_from_args", "is_profile_file", "load_profile", "register", "render_table", "roles_of"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "drift",
        help="compare two data sets or profiles: feature drift, prediction shift, data quality",
        description="Compare CURRENT with REFERENCE. Each is a data file (CSV, Parquet, JSON Lines) or a "
        "profile file. A profile file carries its roles: its outputs and its columns' kinds are used to "
        "profile the other side, so `driftline drift ref.dlp today.csv` needs no --output or "
        "--categorical (flags given still win). Exit status: 0 when the comparison ran (drift or not), "
        "1 with --fail-on-drift when drift was found, 2 on bad input.",
    )
    p.add_argument("reference", help="reference data or profile file")
    p.add_argument("current", help="current data or profile file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_profile_config_args(p)
    p.add_argument("--method", choices=NUMERIC_METHODS, default=_DEFAULTS.numeric_method,
                   help=f"effect size that decides numeric drift (default {_DEFAULTS.numeric_method})")
    p.add_argument("--categorical-method", choices=CATEGORICAL_METHODS, default=_DEFAULTS.categorical_method,
                   help=f"effect size that decides categorical drift (default {_DEFAULTS.categorical_method})")
    p.add_argument("--threshold", action="append", default=[], metavar="[METHOD=]VALUE",
                   help="effect threshold for --method, or METHOD=VALUE for any method (repeatable; "
                   f"defaults: {', '.join(f'{k}={v}' for k, v in DEFAULT_THRESHOLDS.items())})")
    p.add_argument("--feature-threshold", action="append", default=[], metavar="COLUMN=VALUE",
                   help="effect threshold for one column, whatever its method (repeatable)")
    p.add_argument("--alpha", type=float, default=_DEFAULTS.alpha,
                   help=f"false discovery rate (default {_DEFAULTS.alpha})")
    p.add_argument("--correction", choices=["bh", "none"], default="bh",
                   help="multiple-testing correction across columns (default bh: Benjamini-Hochberg)")
    p.add_argument("--min-rows", type=int, default=30, help="fewer values than this: insufficient_data")
    p.add_argument("--bins", type=int, default=10, help="reference-quantile bins for PSI/JS/Hellinger")
    p.add_argument("--drift-share", type=float, default=0.5,
                   help="share of drifted features that makes dataset drift (default 0.5)")
    p.add_argument("--fail-on-drift", nargs="?", const="any", choices=["any", "dataset"], default=None,
                   metavar="any|dataset",
                   help="exit 1 when drift is found, for CI gates: 'any' (the default when the flag is given) "
                   "when any feature or output drifted, 'dataset' only on dataset drift")
    p.set_defaults(func=_run)


def is_profile_file(path: str) -> bool:
    """Whether ``path`` holds a profile envelope (by its magic bytes) rather than data."""
    pth = Path(path)
    if not pth.is_file():
        raise DataFileError(f"{pth}: no such file")
    with pth.open("rb") as fh:
        return fh.read(4) == MAGIC


def roles_of(profile: WindowProfile) -> tuple[list[str], frozenset[str], frozenset[str]]:
    """(outputs, categorical, numeric) column names a profile carries, to profile the other side alike."""
    cols = {**profile.features, **profile.outputs}
    typed = {n: c for n, c in cols.items() if has_typed_values(c)}
    return (list(profile.outputs), frozenset(n for n, c in typed.items() if isinstance(c, CategoricalColumn)),
            frozenset(n for n, c in typed.items() if not isinstance(c, CategoricalColumn)))


def load_profile(path: str, config: ProfileConfig, outputs: list[str], role: str) -> WindowProfile:
    """A profile file as is, or a data file profiled on the fly (with a progress bar)."""
    pth = Path(path)
    if is_profile_file(path):
        return read_profile_file(pth)
    data = DataFile(pth)
    with ProgressBar(data.total, f"profiling {role} {pth.name}", unit=data.unit) as bar:
        return profile_file(data, StreamKey.of("cli", role, role), config, outputs=outputs,
                            on_progress=bar.update_to)


def _pairs(items: list[str], default_key: str | None, what: str) -> dict[str, float]:
    """``KEY=VALUE`` (or a bare ``VALUE`` for ``default_key``) into a dict; bad ones are ConfigError."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.rpartition("=")
        if not sep:
            key = default_key or ""
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not key or not math.isfinite(number):
            raise ConfigError(f"{what} {item!r}: expected {'[METHOD=]' if default_key else 'COLUMN='}NUMBER")
        out[key] = number
    return out


def drift_config_from_args(args: argparse.Namespace) -> DriftConfig:
    """The decision settings the flags describe (ConfigError, exit 2, when they make no sense)."""
    return DriftConfig(
        numeric_method=args.method,
        categorical_method=args.categorical_method,
        thresholds=_pairs(args.threshold, args.method, "--threshold"),
        feature_thresholds=_pairs(args.feature_threshold, None, "--feature-threshold"),
        alpha=args.alpha, correction=args.correction, min_rows=args.min_rows, bins=args.bins,
        drift_share_threshold=args.drift_share,
    )


def _run(args: argparse.Namespace) -> int:
    cfg = profile_config_from_args(args)
    drift_cfg = drift_config_from_args(args)
    given = {side: read_profile_file(p) for side, p in (("reference", args.reference), ("current", args.current))
             if is_profile_file(p)}
    outputs = list(args.output)
    known = given.get("reference") or given.get("current")
    if known is not None:  # the profile's roles, unless a flag says otherwise
        outs, cats, nums = roles_of(known)
        outputs = outputs or outs
        forced = set(cfg.categorical) | set(cfg.numeric)
        cfg = replace(cfg, categorical=cfg.categorical | (cats - forced), numeric=cfg.numeric | (nums - forced))
    ref = given.get("reference") or load_profile(args.reference, cfg, outputs, "reference")
    cur = given.get("current") or load_profile(args.current, cfg, outputs, "current")
    result = compare_profiles(ref, cur, drift_cfg)
    report = result.to_dict()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_table(report))
    if args.fail_on_drift == "dataset":
        return 1 if result.dataset_drift else 0
    if args.fail_on_drift == "any":
        return 1 if any(r.drift_detected for r in result.features + result.outputs) else 0
    return 0


def _f(v: Any, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


_SCORE_COLUMNS = (("ks", "ks"), ("psi", "psi"), ("js", "jensen_shannon"), ("wass", "wasserstein"),
                  ("hell", "hellinger"), ("tvd", "tvd"))


def render_table(report: dict[str, Any]) -> str:
    """The human view of a drift report: one aligned row per column, then the data-quality findings."""
    rows = [["column", "role", "type", "status", "method", "effect", "thresh", "p(adj)",
             *(h for h, _ in _SCORE_COLUMNS)]]
    for role, items in (("feature", report["features"]), ("output", report["outputs"])):
        for f in items:
            s = f["scores"]
            rows.append([f["name"][:40], role, f["type"], f["status"].upper() if f["drift_detected"] else f["status"],
                         f["method"], _f(f["effect"]), _f(f["threshold"], "g"), _f(f["p_value"], ".1e"),
                         *(_f(s.get(key)) for _, key in _SCORE_COLUMNS)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    left = 5  # text columns are left-aligned, numbers right-aligned

    def fmt(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    lines = [
        f"dataset drift: {'YES' if report['dataset_drift'] else 'no'}   drift share: {report['drift_share']:.0%}   "
        f"status: {report['status']}   reference rows: {report['reference_rows']:,}   "
        f"current rows: {report['current_rows']:,}",
        "",
        fmt(rows[0]).rstrip(),
        "-" * (sum(widths) + 2 * (len(widths) - 1)),
        *(fmt(r).rstrip() for r in rows[1:]),
    ]
    issues = report["data_quality"]["issues"]
    if issues:
        lines += ["", "data quality:"]
        w = max(len(i["signal"]) for i in issues)
        for i in issues:
            extra = ", ".join(f"{k}={v}" for k, v in i.items() if k not in ("column", "signal", "role"))
            lines.append(f"  {i['signal']:<{w}}  {i.get('role', 'feature')} {i['column']}  {extra}".rstrip())
    return "\n".join(lines)
