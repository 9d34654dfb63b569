"""Leaks and regressions on one device: robust slopes with a confidence bound, and a latency rank test.

Pure numpy, no scipy (scipy is only the tests' reference). Two questions the service asks of every
device's bounded sample series (``service/device_health.py``):

* **Is memory (or CPU use) growing?** :func:`theil_sen` fits the Theil-Sen slope (the median of the
  pairwise slopes) with Sen's (1968) rank interval: the pairwise slopes' order statistics at the
  critical value of Kendall's S, exact for small series without ties (:func:`kendall_s_sf`), the normal
  approximation with tie correction above (the same rule as ``scipy.stats.theilslopes``). A single
  spike or a garbage-collection dip moves it by at most one rank, which a least-squares slope cannot
  promise. :func:`leak_decision` calls a series *leaking* only when the interval's **lower** bound
  exceeds a minimum rate over at least ``min_samples`` samples: a flat process never is, whatever noise.
* **Did inference get slower?** :func:`latency_regression` compares the recent windows' latency
  p95s with the preceding windows' by a one-sided Mann-Whitney U test (exact for small samples
  without ties) and a minimum relative increase of the medians.

See docs/statistics.md, "Leaks and latency regressions".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from .errors import DriftlineError

__all__ = [
    "EXACT_MAX_N",
    "LatencyRegression",
    "Trend",
    "TrendError",
    "kendall_s_sf",
    "latency_regression",
    "leak_decision",
    "mann_whitney_greater",
    "rate_series",
    "theil_sen",
]

EXACT_MAX_N = 40  # Kendall's exact null distribution up to here (no ties); the normal approximation above
EXACT_MAX_MN = 400  # Mann-Whitney: exact when n_recent * n_baseline is at most this and nothing ties


class TrendError(DriftlineError):
    """A trend asked of data it cannot come from (mismatched lengths, a bad confidence level)."""


@dataclass(frozen=True, slots=True)
class Trend:
    """A robust slope of one series: estimate, two-sided confidence interval, and what it was fit on.

    ``slope`` is in the series' units per hour of ``x``; ``lower``/``upper`` are -inf/+inf when the
    series is too short for the interval at ``confidence``. ``method`` is ``exact`` or ``normal``.
    """

    slope: float
    lower: float
    upper: float
    n: int
    confidence: float
    method: str
    span_hours: float

    def to_dict(self) -> dict[str, float | int | str]:
        return {"slope": self.slope, "lower": self.lower, "upper": self.upper, "n": self.n,
                "confidence": self.confidence, "method": self.method, "span_hours": self.span_hours}


@dataclass(frozen=True, slots=True)
class LatencyRegression:
    """Recent windows' latency p95s against the preceding ones: medians, ratio, p-value, decision."""

    baseline_median: float
    recent_median: float
    ratio: float
    p_value: float
    n_baseline: int
    n_recent: int
    regressed: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        return {"baseline_median": self.baseline_median, "recent_median": self.recent_median, "ratio": self.ratio,
                "p_value": self.p_value, "n_baseline": self.n_baseline, "n_recent": self.n_recent,
                "regressed": self.regressed}


@lru_cache(maxsize=64)
def _inversion_cdf(n: int) -> tuple[float, ...]:
    """P(I <= i) for every i (cached: the interval search asks it many times for one n)."""
    return tuple(float(c) for c in np.cumsum(_inversion_pmf(n)))


def _inversion_pmf(n: int) -> np.ndarray:
    """P(I = i) for the inversion count I of a uniform random permutation of n (Kendall's exact null)."""
    pmf = np.ones(1)
    for k in range(2, n + 1):  # inserting element k adds 0..k-1 inversions, uniformly
        nxt = np.zeros(pmf.size + k - 1)
        for j in range(k):
            nxt[j:j + pmf.size] += pmf
        pmf = nxt / k
    return pmf


def kendall_s_sf(k: int, n: int) -> float:
    """Exact P(S >= k) for Kendall's S = concordant - discordant pairs of n untied points under independence."""
    if n < 2:
        return 1.0 if k <= 0 else 0.0
    big_n = n * (n - 1) // 2
    cdf = _inversion_cdf(n)  # S = N - 2I, so S >= k  <=>  I <= (N - k) / 2
    top = math.floor((big_n - k) / 2)
    if top < 0:
        return 0.0
    return min(1.0, cdf[min(top, big_n)])


def _repeats(a: np.ndarray) -> list[int]:
    _, counts = np.unique(a, return_counts=True)
    return [int(c) for c in counts if c > 1]


def theil_sen(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, confidence: float = 0.95,
              *, x_per_hour: float = 3600.0) -> Trend:
    """Theil-Sen slope of ``y`` over ``x`` with Sen's rank interval at ``confidence``.

    ``x`` is in seconds by default (``x_per_hour`` converts it); the slope is per hour. Exact interval
    (Kendall's exact null distribution) for at most :data:`EXACT_MAX_N` points without ties in x or
    y; otherwise the normal approximation with Sen's tie correction, index for index what
    ``scipy.stats.theilslopes`` returns. Non-finite points are dropped first.
    """
    if not 0.5 <= confidence < 1:
        raise TrendError(f"confidence must be in [0.5, 1), got {confidence}")
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.size != ya.size:
        raise TrendError(f"x has {xa.size} values and y {ya.size}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep] / x_per_hour, ya[keep]
    n = int(xa.size)
    span = float(xa.max() - xa.min()) if n else 0.0
    if n < 2 or span <= 0:
        return Trend(math.nan, -math.inf, math.inf, n, confidence, "none", span)
    dx = xa[:, None] - xa
    dy = ya[:, None] - ya
    pos = dx > 0
    slopes = np.sort(dy[pos] / dx[pos])
    nt = int(slopes.size)
    slope = float(np.median(slopes))
    alpha = 1.0 - confidence
    xreps, yreps = _repeats(xa), _repeats(ya)
    if n <= EXACT_MAX_N and not xreps and not yreps:
        # Smallest k with P(S >= k) <= alpha/2; the interval is the slopes of rank M and N + 1 - M,
        # M = (N - (k - 2)) / 2 (Hollander and Wolfe's C_alpha = k - 2). Below any such k: unbounded.
        big_n = nt
        k = next((c for c in range(-big_n, big_n + 1, 2) if kendall_s_sf(c, n) <= alpha / 2), None)
        if k is None:  # the bound is met only by S = N + 2, i.e. never: too few points
            return Trend(slope, -math.inf, math.inf, n, confidence, "exact", span)
        m = (big_n - (k - 2)) // 2
        if m < 1:
            return Trend(slope, -math.inf, math.inf, n, confidence, "exact", span)
        return Trend(slope, float(slopes[m - 1]), float(slopes[big_n - m]), n, confidence, "exact", span)
    z = NormalDist().inv_cdf(alpha / 2)  # negative, as scipy's
    sigsq = (n * (n - 1) * (2 * n + 5) - sum(k * (k - 1) * (2 * k + 5) for k in xreps)
             - sum(k * (k - 1) * (2 * k + 5) for k in yreps)) / 18.0
    sigma = math.sqrt(max(sigsq, 0.0))
    ru = min(int(np.round((nt - z * sigma) / 2.0)), nt - 1)
    rl = max(int(np.round((nt + z * sigma) / 2.0)) - 1, 0)
    return Trend(slope, float(slopes[rl]), float(slopes[ru]), n, confidence, "normal", span)


def leak_decision(trend: Trend, min_rate_per_hour: float, min_samples: int) -> bool:
    """A leak: at least ``min_samples`` points and the interval's lower bound above ``min_rate_per_hour``.

    The lower bound, not the estimate: a flat series whose estimate wanders above the rate by
    chance stays unflagged at the interval's confidence.
    """
    return trend.n >= min_samples and math.isfinite(trend.lower) and trend.lower > min_rate_per_hour


def rate_series(t: Sequence[float] | np.ndarray, counter: Sequence[float] | np.ndarray,
                ) -> tuple[np.ndarray, np.ndarray]:
    """A cumulative counter (CPU seconds) as rates (CPU cores) at interval midpoints.

    Intervals where the counter goes down (a restart) or time does not advance are dropped, so a
    CPU trend is the slope of utilisation, never of the counter.
    """
    ta = np.asarray(t, dtype=np.float64).ravel()
    ca = np.asarray(counter, dtype=np.float64).ravel()
    if ta.size != ca.size:
        raise TrendError(f"t has {ta.size} values and the counter {ca.size}")
    order = np.argsort(ta, kind="stable")
    ta, ca = ta[order], ca[order]
    dt, dc = np.diff(ta), np.diff(ca)
    ok = (dt > 0) & (dc >= 0) & np.isfinite(dt) & np.isfinite(dc)
    return ((ta[:-1] + ta[1:]) / 2)[ok], (dc[ok] / dt[ok])


def _u_sf_exact(u: float, m: int, n: int) -> float:
    """Exact P(U >= u) of Mann-Whitney's U for samples of m and n without ties."""
    # counts[m][n][u] by the recursion f(u; m, n) = f(u - n; m - 1, n) + f(u; m, n - 1)
    table: dict[tuple[int, int], np.ndarray] = {}

    def f(a: int, b: int) -> np.ndarray:
        if (a, b) in table:
            return table[(a, b)]
        if a == 0 or b == 0:
            out = np.ones(1)
        else:
            left, right = f(a - 1, b), f(a, b - 1)
            out = np.zeros(a * b + 1)
            out[b:b + left.size] += left
            out[:right.size] += right
        table[(a, b)] = out
        return out

    counts = f(m, n)
    total = counts.sum()
    lo = max(int(math.ceil(u - 1e-9)), 0)
    return float(counts[lo:].sum() / total) if lo < counts.size else 0.0


def mann_whitney_greater(recent: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray,
                         ) -> float:
    """One-sided p-value that ``recent`` tends to exceed ``baseline`` (Mann-Whitney U).

    Exact without ties for small samples (``m * n <= EXACT_MAX_MN``); otherwise the normal
    approximation with tie correction and continuity correction (scipy's ``asymptotic`` method).
    """
    a = np.asarray(recent, dtype=np.float64).ravel()
    b = np.asarray(baseline, dtype=np.float64).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    m, n = int(a.size), int(b.size)
    if m == 0 or n == 0:
        return 1.0
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(both.size)
    ranks[order] = np.arange(1, both.size + 1, dtype=np.float64)
    vals, inv, counts = np.unique(both, return_inverse=True, return_counts=True)
    if (counts > 1).any():  # midranks
        sums = np.bincount(inv, weights=ranks)
        ranks = (sums / counts)[inv]
    u = float(ranks[:m].sum() - m * (m + 1) / 2)
    ties = counts[counts > 1]
    if not ties.size and m * n <= EXACT_MAX_MN:
        return _u_sf_exact(u, m, n)
    big = m + n
    tie_term = float((ties ** 3 - ties).sum()) / (big * (big - 1)) if ties.size else 0.0
    var = m * n / 12.0 * ((big + 1) - tie_term)
    if var <= 0:
        return 1.0
    zval = (u - m * n / 2.0 - 0.5) / math.sqrt(var)
    return float(1.0 - NormalDist().cdf(zval))


def latency_regression(p95s: Sequence[float] | np.ndarray, *, recent: int = 6, min_baseline: int = 12,
                       max_baseline: int = 48, alpha: float = 0.001, min_increase: float = 0.2,
                       ) -> LatencyRegression | None:
    """The newest ``recent`` window p95s against up to ``max_baseline`` before them (oldest first in).

    None when there are fewer than ``recent + min_baseline`` finite values. Regressed when the
    Mann-Whitney one-sided p-value is below ``alpha`` and the recent median exceeds the baseline
    median by at least ``min_increase`` (0.2: 20 %), so a significant but harmless 2 % is not paged.
    """
    v = np.asarray(p95s, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if recent < 1 or v.size < recent + min_baseline:
        return None
    cur = v[-recent:]
    base = v[:-recent][-max_baseline:]
    bm, rm = float(np.median(base)), float(np.median(cur))
    ratio = rm / bm if bm > 0 else (math.inf if rm > 0 else 1.0)
    p = mann_whitney_greater(cur, base)
    return LatencyRegression(bm, rm, ratio, p, int(base.size), int(cur.size),
                             bool(p < alpha and ratio >= 1.0 + min_increase))
