"""The decision rule: when does a column count as drifted?

A p-value alone is not a decision: at a million rows it flags shifts nobody cares about, and a
distance alone flags noise at thirty rows. A column is flagged when **both** hold:

1. *significant*: its test p-value (KS for numeric columns, chi-square for categorical ones),
   adjusted across all columns of the comparison with Benjamini-Hochberg (false discovery rate
   ``alpha``), is below ``alpha``; and
2. *material*: its effect size reaches the method's threshold (defaults: normalised Wasserstein
   0.1 for numeric columns, TVD 0.05 for categorical ones). The effect is the score with the
   sketches' noise taken out (every CDF gap shrunk in quadrature by the typical rank error; KS by
   the full bound; categorical scores on the least different tables the frequent-items bounds
   allow, plus the rows provably on values the reference never had), so noise does not make drift
   while a real change keeps almost all of its size. The KS test runs on the distance less both
   sketches' full bounds, so noise never makes a p-value smaller.

Columns with fewer than ``min_rows`` values on either side are ``insufficient_data``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from .categorical import CATEGORICAL_METHODS
from .numeric import NUMERIC_METHODS

__all__ = ["CATEGORICAL_METHODS", "DEFAULT_THRESHOLDS", "DRIFT_METHODS", "NUMERIC_METHODS", "SCORE_METHODS",
           "DriftConfig", "benjamini_hochberg"]

DRIFT_METHODS: tuple[str, ...] = tuple(dict.fromkeys((*NUMERIC_METHODS, *CATEGORICAL_METHODS)))
"""Every effect-size method a column may be judged by: the one list config, thresholds and metrics share."""

SCORE_METHODS: tuple[str, ...] = (*DRIFT_METHODS, "chi2_p_value")
"""The scores exposed per column (``driftline_feature_drift_score{method}``): every method plus chi-square's p."""

DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "ks": 0.1,
    "psi": 0.2,
    "jensen_shannon": 0.1,
    "wasserstein": 0.1,
    "hellinger": 0.1,
    "tvd": 0.05,
}
if set(DEFAULT_THRESHOLDS) != set(DRIFT_METHODS):  # pragma: no cover - a new method needs its threshold
    raise ImportError("DEFAULT_THRESHOLDS must name every method of DRIFT_METHODS")


@dataclass(frozen=True)
class DriftConfig:
    """Settings of one comparison; per-feature entries override the per-method defaults.

    ``numeric_method`` / ``categorical_method`` pick the effect size that must reach its threshold
    (``feature_methods`` per column). ``thresholds`` overrides per method, ``feature_thresholds``
    per column (for whichever method that column uses). Unknown methods are refused by name.
    """

    numeric_method: str = "wasserstein"
    categorical_method: str = "tvd"
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    feature_methods: Mapping[str, str] = field(default_factory=dict)
    feature_thresholds: Mapping[str, float] = field(default_factory=dict)
    alpha: float = 0.01
    correction: str = "bh"  # "bh" (Benjamini-Hochberg) or "none"
    min_rows: int = 30
    bins: int = 10
    drift_share_threshold: float = 0.5
    missing_rate_tolerance: float = 0.05
    out_of_range_tolerance: float = 0.01
    critical_features: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.correction not in ("bh", "none"):
            raise ConfigError(f"correction must be 'bh' or 'none', got {self.correction!r}")
        if self.bins < 2:
            raise ConfigError(f"bins must be >= 2, got {self.bins}")
        if self.min_rows < 1:
            raise ConfigError(f"min_rows must be >= 1, got {self.min_rows}")
        if not 0 < self.drift_share_threshold <= 1:
            raise ConfigError(f"drift_share_threshold must be in (0, 1], got {self.drift_share_threshold}")
        if self.numeric_method not in NUMERIC_METHODS:
            raise ConfigError(f"unknown numeric drift method {self.numeric_method!r} "
                              f"(known: {', '.join(NUMERIC_METHODS)})")
        if self.categorical_method not in CATEGORICAL_METHODS:
            raise ConfigError(f"unknown categorical drift method {self.categorical_method!r} "
                              f"(known: {', '.join(CATEGORICAL_METHODS)})")
        for name, method in self.feature_methods.items():
            if method not in DEFAULT_THRESHOLDS:
                raise ConfigError(f"unknown drift method {method!r} for column {name!r} "
                                  f"(known: {', '.join(sorted(DRIFT_METHODS))})")
        unknown = sorted(set(self.thresholds) - set(DEFAULT_THRESHOLDS))
        if unknown:
            raise ConfigError(f"unknown drift method(s) in thresholds: {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(DRIFT_METHODS))})")
        for key, value in [*self.thresholds.items(), *self.feature_thresholds.items()]:
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"threshold for {key!r} must be a finite number >= 0, got {value}")

    def method_for(self, name: str, kind: str) -> str:
        """The effect-size method of one column; a per-column method of the wrong kind falls back."""
        default = self.numeric_method if kind == "numeric" else self.categorical_method
        method = self.feature_methods.get(name, default)
        allowed = NUMERIC_METHODS if kind == "numeric" else CATEGORICAL_METHODS
        return method if method in allowed else default

    def threshold_for(self, name: str, method: str) -> float:
        if name in self.feature_thresholds:
            return float(self.feature_thresholds[name])
        return float(self.thresholds.get(method, DEFAULT_THRESHOLDS[method]))


def benjamini_hochberg(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Adjusted p-values (step-up, monotone), controlling the false discovery rate.

    ``p_adj[(i)] = min_{j >= i} min(1, p_(j) n / j)`` over the sorted p-values.

    Examples
    --------
    >>> benjamini_hochberg([0.01, 0.04, 0.03, 0.5]).round(3).tolist()
    [0.04, 0.053, 0.053, 0.5]

    References
    ----------
    Benjamini, Y. and Hochberg, Y. (1995). Controlling the false discovery rate. JRSS B 57(1).
    """
    p = np.asarray(p_values, dtype=np.float64)
    n = p.size
    if n == 0:
        return p
    order = np.argsort(p, kind="stable")
    ranked = p[order] * n / np.arange(1, n + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adjusted, 1.0)
    return out
