"""The decision rule: when does a column count as drifted?

A p-value alone is not a decision: at a million rows it flags shifts nobody cares about, and a
distance alone flags noise at thirty rows. A column is flagged when **both** hold:

1. *significant*: its test p-value, adjusted across all columns of the comparison with
   Benjamini-Hochberg (false discovery rate ``alpha``), is below ``alpha``; and
2. *material*: its effect size is over the method's threshold. For KS the effect is the distance
   *less the sketches' rank-error bound*, so sketch noise can never make a column drift.

Columns with fewer than ``min_rows`` values on either side are ``insufficient_data``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DEFAULT_THRESHOLDS", "DriftConfig", "benjamini_hochberg"]

DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "ks": 0.1,
    "psi": 0.2,
    "jensen_shannon": 0.1,
    "wasserstein": 0.1,
    "hellinger": 0.1,
    "tvd": 0.1,
}


@dataclass(frozen=True)
class DriftConfig:
    """Settings of one comparison; per-feature entries override the per-method defaults.

    ``numeric_method`` / ``categorical_method`` pick the effect size that must pass its threshold
    (p-values always come from KS for numeric columns and chi-square for categorical ones).
    """

    numeric_method: str = "ks"
    categorical_method: str = "tvd"
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    feature_methods: Mapping[str, str] = field(default_factory=dict)
    feature_thresholds: Mapping[str, float] = field(default_factory=dict)
    alpha: float = 0.05
    correction: str = "bh"  # "bh" (Benjamini-Hochberg) or "none"
    min_rows: int = 30
    bins: int = 10
    drift_share_threshold: float = 0.5
    missing_rate_tolerance: float = 0.05
    out_of_range_tolerance: float = 0.01
    critical_features: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        if self.correction not in ("bh", "none"):
            raise ValueError("correction must be 'bh' or 'none'")
        if self.bins < 2:
            raise ValueError("bins must be >= 2")
        known = set(DEFAULT_THRESHOLDS)
        for method in [self.numeric_method, self.categorical_method, *self.feature_methods.values()]:
            if method not in known:
                raise ValueError(f"unknown drift method {method!r} (known: {', '.join(sorted(known))})")

    def method_for(self, name: str, kind: str) -> str:
        default = self.numeric_method if kind == "numeric" else self.categorical_method
        method = self.feature_methods.get(name, default)
        if kind == "categorical" and method in ("ks", "wasserstein", "hellinger"):
            return self.categorical_method
        if kind == "numeric" and method == "tvd":
            return self.numeric_method
        return method

    def threshold_for(self, name: str, method: str) -> float:
        if name in self.feature_thresholds:
            return float(self.feature_thresholds[name])
        return float(self.thresholds.get(method, DEFAULT_THRESHOLDS[method]))


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Adjusted p-values (step-up, monotone), controlling the false discovery rate."""
    p = np.asarray(p_values, dtype=np.float64)
    n = p.size
    if n == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adjusted, 1.0)
    return out
