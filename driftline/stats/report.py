"""``compare_profiles``: one reference, one current profile, one honest report.

The JSON shape of :meth:`DriftReport.to_dict` is the public contract shared by ``driftline drift
--json`` and the service's ``GET /v1/models/{model}/drift``::

    {"dataset_drift": bool, "drift_share": float, "status": "ok"|"drift"|"insufficient_data",
     "features": [item...], "outputs": [item...], "data_quality": {"issues": [...], "counts": {...}},
     "reference_rows": int, "current_rows": int, "config": {...}}

    item = {"name", "type", "drift_detected", "status", "method", "threshold", "effect",
            "p_value" (BH-adjusted), "scores": {...}, "rows": {"reference", "current"},
            "missing_ratio": {"reference", "current"}, "critical": bool, "types" (only for a
            ``type_change``: values per kind)}

Both values are frozen: a report can be shared between threads (the service's newest results) and
read without a lock; :meth:`DriftReport.to_dict` builds fresh JSON each time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..columns import CategoricalColumn, Column, NumericColumn
from ..profile import WindowProfile
from .categorical import categorical_scores
from .decision import DEFAULT_THRESHOLDS, DriftConfig, benjamini_hochberg
from .numeric import NumericScores, numeric_scores, numeric_scores_many
from .quality import SIGNALS, column_issues, missing_ratio, schema_issues

__all__ = ["ColumnResult", "DriftReport", "compare_profiles"]


@dataclass(frozen=True)
class ColumnResult:
    """The verdict for one feature or output (an immutable value)."""

    name: str
    kind: str
    status: str
    method: str
    threshold: float
    effect: float | None = None
    raw_p_value: float | None = None
    p_value: float | None = None
    drift_detected: bool = False
    scores: Mapping[str, float] = field(default_factory=dict)
    rows: tuple[int, int] = (0, 0)
    missing: tuple[float, float] = (0.0, 0.0)
    critical: bool = False
    types: Mapping[str, int] | None = None  # a type_change: values of each kind in the current range

    def clean_scores(self) -> dict[str, float | None]:
        """The scores as every output shows them: a score that is not finite is ``None``."""
        return {k: _clean(v) for k, v in self.scores.items()}

    @property
    def missing_current(self) -> float:
        """The current window's missing share, as shown (6 decimals)."""
        return round(self.missing[1], 6)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "type": self.kind,
            "drift_detected": self.drift_detected,
            "status": self.status,
            "method": self.method,
            "threshold": self.threshold,
            "effect": _clean(self.effect),
            "p_value": _clean(self.p_value),
            "scores": self.clean_scores(),
            "rows": {"reference": self.rows[0], "current": self.rows[1]},
            "missing_ratio": {"reference": round(self.missing[0], 6), "current": self.missing_current},
            "critical": self.critical,
        }
        if self.types is not None:
            out["types"] = dict(self.types)
        return out


def _clean(v: float | None) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return float(v)


@dataclass(frozen=True)
class DriftReport:
    """Per-column results, the dataset-level decision and data-quality findings (an immutable value)."""

    features: tuple[ColumnResult, ...]
    outputs: tuple[ColumnResult, ...]
    issues: tuple[Mapping[str, Any], ...]
    reference_rows: int
    current_rows: int
    config: DriftConfig

    @property
    def evaluated(self) -> list[ColumnResult]:
        return [f for f in self.features if f.status in ("ok", "drift")]

    @property
    def drift_share(self) -> float:
        ev = self.evaluated
        return sum(f.drift_detected for f in ev) / len(ev) if ev else 0.0

    @property
    def shown_share(self) -> float:
        """:attr:`drift_share` as every output shows it (6 decimals): JSON, metrics, webhooks."""
        return round(self.drift_share, 6)

    @property
    def dataset_drift(self) -> bool:
        return bool(self.evaluated) and self.drift_share >= self.config.drift_share_threshold

    @property
    def status(self) -> str:
        if not self.evaluated:
            return "insufficient_data"
        return "drift" if self.dataset_drift else "ok"

    @property
    def issue_counts(self) -> dict[str, int]:
        """Issues per data-quality signal, every known signal present (0 when none)."""
        counts = {s: 0 for s in SIGNALS}
        for i in self.issues:
            counts[i["signal"]] = counts.get(i["signal"], 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        counts = self.issue_counts
        return {
            "dataset_drift": self.dataset_drift,
            "drift_share": self.shown_share,
            "status": self.status,
            "features": [f.to_dict() for f in self.features],
            "outputs": [f.to_dict() for f in self.outputs],
            "data_quality": {"issues": [dict(i) for i in self.issues], "counts": counts},
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "config": {
                "alpha": self.config.alpha,
                "correction": self.config.correction,
                "min_rows": self.config.min_rows,
                "drift_share_threshold": self.config.drift_share_threshold,
                "numeric_method": self.config.numeric_method,
                "categorical_method": self.config.categorical_method,
                "thresholds": {**DEFAULT_THRESHOLDS, **self.config.thresholds},
                "bins": self.config.bins,
            },
        }


def _score_column(name: str, ref: Column, cur: Column, cfg: DriftConfig, role: str,
                  issues: list[dict[str, Any]], numeric: NumericScores | None = None) -> ColumnResult:
    method = cfg.method_for(name, ref.kind)
    status, scores, raw_p, effect = "ok", {}, None, None
    if min(ref.count, cur.count) < cfg.min_rows:
        issues.extend(column_issues(name, ref, cur, cfg, role=role))
        status = "insufficient_data"
    elif isinstance(ref, NumericColumn) and isinstance(cur, NumericColumn):
        ns = numeric if numeric is not None else numeric_scores(ref, cur, bins=cfg.bins)
        scores, raw_p, effect = ns.as_dict(), ns.ks_p_value, ns.effects[method]
        issues.extend(column_issues(name, ref, cur, cfg, role=role, shares_outside=ns.outside))
    elif isinstance(ref, CategoricalColumn) and isinstance(cur, CategoricalColumn):
        cs = categorical_scores(ref, cur)
        scores = cs.as_dict()
        raw_p, effect = cs.chi2_p_value, scores[method]
        issues.extend(column_issues(name, ref, cur, cfg, cs.new_category_rate, cs.new_categories, role=role))
    # built once (a frozen dataclass's replace() costs a whole __init__ per change)
    return ColumnResult(name=name, kind=ref.kind, status=status, method=method,
                        threshold=cfg.threshold_for(name, method), effect=effect, raw_p_value=raw_p, scores=scores,
                        rows=(ref.count, cur.count), missing=(missing_ratio(ref), missing_ratio(cur)),
                        critical=name in cfg.critical_features)


def _decided(r: ColumnResult, p_value: float, detected: bool) -> ColumnResult:
    """``r`` with its adjusted p-value and decision: ``dataclasses.replace`` without re-running the
    frozen ``__init__`` (one per column of every report), by copying the fields of a finished value."""
    out = object.__new__(ColumnResult)
    fields = out.__dict__
    fields.update(r.__dict__)
    fields.update(p_value=p_value, drift_detected=detected, status="drift" if detected else "ok")
    return out


def _compare_side(ref: dict[str, Column], cur: dict[str, Column], cfg: DriftConfig, role: str,
                  issues: list[dict[str, Any]], current_rows: int) -> list[ColumnResult]:
    schema = schema_issues(ref, cur, role, current_rows)
    issues.extend(schema)
    broken = {i["column"]: i["signal"] for i in schema if i["signal"] in ("missing_column", "type_change")}
    # every numeric pair with enough values on both sides is scored in one batch (a few numpy calls
    # per statistic for all of them, instead of a dozen per column)
    pairs = {name: (rcol, ccol) for name, rcol in ref.items()
             if name not in broken and isinstance(rcol, NumericColumn)
             and isinstance(ccol := cur.get(name), NumericColumn) and min(rcol.count, ccol.count) >= cfg.min_rows}
    numeric = dict(zip(pairs, numeric_scores_many(list(pairs.values()), bins=cfg.bins), strict=True))
    results = []
    for name, rcol in ref.items():
        if name not in broken and name not in cur:  # no current rows at all: nothing to judge yet
            method = cfg.method_for(name, rcol.kind)
            results.append(ColumnResult(name=name, kind=rcol.kind, status="insufficient_data", method=method,
                                        threshold=cfg.threshold_for(name, method), rows=(rcol.count, 0),
                                        critical=name in cfg.critical_features))
            continue
        if name in broken:
            kind = rcol.kind
            method = cfg.method_for(name, kind)
            results.append(ColumnResult(name=name, kind=kind, status=broken[name], method=method,
                                        threshold=cfg.threshold_for(name, method),
                                        critical=name in cfg.critical_features))
            continue
        results.append(_score_column(name, rcol, cur[name], cfg, role, issues, numeric.get(name)))
    return results


def compare_profiles(reference: WindowProfile, current: WindowProfile, config: DriftConfig | None = None) -> DriftReport:
    """Compare every feature and output of ``current`` with ``reference``.

    Features and outputs share one Benjamini-Hochberg correction, so adding columns does not
    inflate false alarms. Columns only in ``current`` are reported as ``new_column`` issues. A column
    that is all missing on one side is ``insufficient_data`` with a ``missing_rate_jump`` (not a
    ``type_change``); current data with no rows makes every column ``insufficient_data``.
    """
    cfg = config or DriftConfig()
    issues: list[dict[str, Any]] = []
    features = _compare_side(reference.features, current.features, cfg, "feature", issues, current.rows_profiled)
    outputs = _compare_side(reference.outputs, current.outputs, cfg, "output", issues, current.rows_profiled)
    tested = [r for r in features + outputs if r.raw_p_value is not None]
    raw = [r.raw_p_value if r.raw_p_value is not None and math.isfinite(r.raw_p_value) else 1.0 for r in tested]
    adjusted = benjamini_hochberg(raw) if cfg.correction == "bh" else raw
    decided = {}
    for r, p in zip(tested, adjusted, strict=True):
        detected = bool(p < cfg.alpha and r.effect is not None and r.effect >= r.threshold)
        decided[id(r)] = _decided(r, float(p), detected)
    return DriftReport(tuple(decided.get(id(r), r) for r in features), tuple(decided.get(id(r), r) for r in outputs),
                       tuple(issues), reference.rows, current.rows, cfg)
