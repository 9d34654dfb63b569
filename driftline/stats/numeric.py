"""Drift scores for numeric columns, from KLL sketches and exact moments.

A KLL sketch stands for a step CDF: its retained items, each with a weight. :func:`sketch_cdf` reads
that CDF out of the sketch once (about a thousand items), and every method below is numpy on it, so
the sketch-based scores are *exactly* the scores of the two distributions the sketches stand for:

* KS distance: ``sup |F_R - F_C|`` over the union of both sketches' items (the sup of two step
  functions is reached at a step).
* PSI, Jensen-Shannon and Hellinger on ``bins`` reference-quantile bins ``(e[i-1], e[i]]``,
  ``e[i] = Q_R(i / bins)``.
* Wasserstein-1 as the integral of ``|F_C - F_R|`` with the typical sketch error taken out of every
  gap in quadrature, never below the exact ``|mu_C - mu_R|`` (``A+ - A- = mu_R - mu_C`` and the
  profiles carry exact sums). Divided by the reference's population standard deviation (exact, from
  the sums of values and squares).

Each score also has an *effect*: the same quantity with every CDF gap shrunk in quadrature by the two
sketches' typical error (KS by their full bound), the decision rule's input. :func:`exact_numeric_scores` runs the same
code on raw arrays, for tests and benchmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..columns import NumericColumn
from .distributions import ks_p_value
from .divergence import hellinger, jensen_shannon, psi

__all__ = [
    "QUANTILE_RANKS",
    "NumericScores",
    "SketchCDF",
    "binned_masses",
    "exact_numeric_scores",
    "numeric_scores",
    "sketch_cdf",
]

QUANTILE_RANKS = (0.05, 0.25, 0.5, 0.75, 0.95)
NUMERIC_METHODS = ("ks", "psi", "jensen_shannon", "hellinger", "wasserstein")


@dataclass(frozen=True, slots=True)
class SketchCDF:
    """A step CDF: sorted distinct ``items`` and integer ``cum`` weights at or below each one.

    ``rank_error`` bounds ``|F_sketch - F_data|`` (99% confidence); 0 while the sketch still holds
    every value it saw.
    """

    items: np.ndarray
    cum: np.ndarray
    rank_error: float = 0.0

    @property
    def n(self) -> float:
        return float(self.cum[-1]) if self.cum.size else 0.0

    def cdf(self, x: np.ndarray, inclusive: bool = True) -> np.ndarray:
        """Share of weight ``<= x`` (``< x`` when not inclusive)."""
        idx = np.searchsorted(self.items, x, side="right" if inclusive else "left")
        return np.concatenate(([0.0], self.cum))[idx] / self.n

    def quantiles(self, ranks: np.ndarray | tuple[float, ...]) -> np.ndarray:
        """Smallest item whose CDF reaches each rank (numpy's ``inverted_cdf``, KLL's inclusive rule)."""
        target = np.asarray(ranks, dtype=np.float64) * self.n
        idx = np.searchsorted(self.cum, target * (1 - 1e-12), side="left")
        return self.items[np.clip(idx, 0, self.items.size - 1)]

    def std(self) -> float:
        """Population standard deviation of the distribution the CDF stands for."""
        w = np.diff(np.concatenate(([0.0], self.cum)))
        mean = float(np.dot(w, self.items)) / self.n
        return math.sqrt(max(float(np.dot(w, (self.items - mean) ** 2)) / self.n, 0.0))

    @classmethod
    def from_values(cls, values: np.ndarray) -> SketchCDF:
        """The exact CDF of raw values (rank error 0)."""
        items, counts = np.unique(np.asarray(values, dtype=np.float64), return_counts=True)
        return cls(items, np.cumsum(counts).astype(np.float64))


def sketch_cdf(col: NumericColumn) -> SketchCDF:
    """Read the step CDF out of a column's KLL sketch: its retained (item, weight) pairs, sorted once.

    Tied items become one step (the cumulative weight at the last of each run); weights are powers
    of two and totals stay below 2**53, so every cumulative weight is exact.
    """
    raw, weights = col.weighted_items()
    order = np.argsort(raw, kind="stable")
    sorted_items = raw[order]
    cum_all = np.cumsum(weights[order])
    last = np.empty(sorted_items.size, dtype=bool)
    np.not_equal(sorted_items[1:], sorted_items[:-1], out=last[:-1])
    last[-1:] = True
    items, cum = sorted_items[last], cum_all[last]
    exact = not col.kll.is_estimation_mode()
    return SketchCDF(items, cum, 0.0 if exact else float(col.kll.normalized_rank_error(False)))


@dataclass(frozen=True, slots=True)
class NumericScores:
    """Scores of one numeric column.

    ``effects`` holds the versions with the sketches' noise taken out (CDF gaps shrunk in quadrature
    by the typical error; KS by ``rank_error``, the two sketches' combined bound); ``ks_p_value`` is
    computed from the KS distance less ``rank_error``, so it is conservative.
    """

    ks: float
    ks_p_value: float
    psi: float
    jensen_shannon: float
    hellinger: float
    wasserstein: float
    mean_shift: float
    quantile_shifts: dict[str, float]
    rank_error: float
    effects: dict[str, float]
    n_ref: int
    n_cur: int

    def as_dict(self) -> dict[str, float]:
        d = {
            "ks": self.ks,
            "ks_p_value": self.ks_p_value,
            "psi": self.psi,
            "jensen_shannon": self.jensen_shannon,
            "hellinger": self.hellinger,
            "wasserstein": self.wasserstein,
            "mean_shift": self.mean_shift,
        }
        d.update({f"shift_{k}": v for k, v in self.quantile_shifts.items()})
        d["rank_error"] = self.rank_error
        return d


def reference_scale(var: float, mean: float, ref: SketchCDF) -> float:
    """The scale that normalises Wasserstein and shifts: the reference's population std, never zero.

    The exact variance comes from sums of values and squares; when the mean dwarfs the spread
    (``mean^2 / var > 1e8``) that subtraction has lost most of its digits, so the sketch's own
    spread is used instead. A constant reference falls back to ``max(|mean|, 1)``.
    """
    if math.isfinite(var) and var > 0 and mean * mean / var < 1e8:
        return math.sqrt(var)
    if ref.n > 0:
        s = ref.std()
        if s > 0:
            return s
    return max(abs(mean), 1.0) if math.isfinite(mean) else 1.0


def binned_masses(cdf: SketchCDF, edges: np.ndarray) -> np.ndarray:
    """Masses of the bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    return np.diff(np.concatenate(([0.0], cdf.cdf(edges), [1.0])))


EDGE_SNAP = 0.02
"""Rank distance within which a bin edge snaps to the nearest step of the reference CDF."""


def stable_edges(ref: SketchCDF, bins: int, snap: float = EDGE_SNAP) -> np.ndarray:
    """Reference-quantile bin edges that do not flip with sketch noise on tied data.

    The plain edge ``Q_R(i / bins)`` jumps from one tied value to the next when the target rank sits
    near the top of a point mass (a tied value's CDF at 0.3 and a target of 0.3): sketch noise of a
    few thousandths then moves the whole point mass between bins, and identical runs disagree. Here
    each edge is the item whose CDF step top lies nearest the target rank when that distance is within
    ``snap`` (2% of the rank by default, beyond any sketch's rank error), else the plain quantile. So
    a large point mass always stays on the same side of an edge, and an edge only ever moves across
    mass of at most ``2 * snap``. On continuous data a step top lies within ``1/n`` of every target,
    so the edges are the usual quantiles.
    """
    if ref.items.size == 0:
        return ref.items
    targets = np.arange(1, bins) / bins
    tops = ref.cum / ref.n  # CDF at each item: the top of its step
    right = np.clip(np.searchsorted(tops, targets, side="left"), 0, tops.size - 1)
    left = np.clip(right - 1, 0, tops.size - 1)
    nearest = np.where(np.abs(tops[left] - targets) <= np.abs(tops[right] - targets), left, right)
    close = np.abs(tops[nearest] - targets) <= snap
    edges = np.unique(np.where(close, ref.items[nearest], ref.quantiles(targets)))
    # no bin narrower than ``snap`` of the reference: a sliver next to a point mass (its edge one item
    # past the mass) would hold a few rows whose sketch noise the divergences magnify
    kept: list[float] = []
    last = 0.0
    for edge, top in zip(edges.tolist(), ref.cdf(edges).tolist(), strict=True):
        if top - last >= snap and 1.0 - top >= snap:
            kept.append(edge)
            last = top
    return np.array(kept, dtype=np.float64)


def _shrink(gap: np.ndarray, eps: float) -> np.ndarray:
    """Move every CDF gap toward zero in quadrature: ``sign(g) sqrt(max(g^2 - eps^2, 0))``.

    The least drift the sketches' noise explains: a gap at the noise level ``eps`` becomes 0, while a
    gap several times larger keeps almost all of itself (``0.06`` less ``0.005`` stays ``0.0598``), so
    a real change, such as a scale change whose CDF gap is small everywhere, never becomes
    unflaggable, and the shrink vanishes as the sketches grow exact.
    """
    return np.sign(gap) * np.sqrt(np.maximum(gap * gap - eps * eps, 0.0))


RMS_PER_BOUND = 1.0 / 2.576
"""A KLL rank-error bound holds at 99% confidence; the typical (rms) error is about ``bound / 2.576``."""


def _binned(p_cum: np.ndarray, q_cum: np.ndarray) -> tuple[float, float, float]:
    p = np.clip(np.diff(np.concatenate(([0.0], p_cum, [1.0]))), 0.0, 1.0)
    q = np.clip(np.diff(np.concatenate(([0.0], q_cum, [1.0]))), 0.0, 1.0)
    p, q = p / p.sum(), q / q.sum()
    return psi(p, q), jensen_shannon(p, q), hellinger(p, q)


def scores_from_cdfs(ref: SketchCDF, cur: SketchCDF, mean_ref: float, mean_cur: float, scale: float,
                     *, bins: int = 10) -> NumericScores:
    """Every numeric score from two step CDFs and the exact means (shared by sketches and raw data)."""
    eps = ref.rank_error + cur.rank_error
    # typical combined CDF error at one point: the two sketches' rms errors in quadrature
    rms = math.hypot(ref.rank_error, cur.rank_error) * RMS_PER_BOUND
    x = np.union1d(ref.items, cur.items)
    gap = cur.cdf(x) - ref.cdf(x)
    ks = float(np.max(np.abs(gap)))
    # W1 = integral of |gap| = A+ + A-; the step CDFs are constant on [x_i, x_{i+1})
    dx, g = np.diff(x), gap[:-1]
    net = abs(mean_cur - mean_ref)

    def parts(gp: np.ndarray) -> tuple[float, float]:
        return float(np.dot(np.maximum(gp, 0.0), dx)), float(np.dot(np.maximum(-gp, 0.0), dx))

    # W1 from the gaps with the typical sketch error taken out in quadrature (noise-only crossings of
    # the two CDFs vanish, real gaps keep almost all of themselves), never below the exact |mean
    # difference| (A+ - A- = mu_R - mu_C, and the profiles carry exact sums). With exact CDFs this is
    # the integral of |gap| itself. It is both the score and the effect: more accurate than the raw
    # integral on every measured shape (docs/statistics.md).
    a_pos, a_neg = parts(_shrink(g, rms) if rms > 0 else g)
    w1_v = w1_e = max(a_pos + a_neg, net) / scale
    edges = stable_edges(ref, bins)
    p_cum, q_cum = ref.cdf(edges), cur.cdf(edges)
    psi_v, js_v, hel_v = _binned(p_cum, q_cum)
    psi_e, js_e, hel_e = _binned(p_cum, p_cum + _shrink(q_cum - p_cum, rms)) if rms > 0 else (psi_v, js_v, hel_v)
    # KS is a maximum over many points, so its noise is the 99% bound, not the typical error
    ks_effect = float(np.sqrt(max(ks * ks - eps * eps, 0.0)))
    effects = {"ks": ks_effect, "psi": min(psi_e, psi_v), "jensen_shannon": min(js_e, js_v),
               "hellinger": min(hel_e, hel_v), "wasserstein": w1_e}
    qr, qc = ref.quantiles(QUANTILE_RANKS), cur.quantiles(QUANTILE_RANKS)
    shifts = {f"p{round(r * 100)}": float(d) for r, d in zip(QUANTILE_RANKS, (qc - qr) / scale, strict=True)}
    # the test stays conservative: the KS distance less the full bound of both sketches
    return NumericScores(
        ks=ks, ks_p_value=ks_p_value(max(ks - eps, 0.0), ref.n, cur.n), psi=psi_v, jensen_shannon=js_v,
        hellinger=hel_v, wasserstein=w1_v, mean_shift=(mean_cur - mean_ref) / scale, quantile_shifts=shifts,
        rank_error=eps, effects=effects, n_ref=int(ref.n), n_cur=int(cur.n),
    )


def numeric_scores(ref: NumericColumn, cur: NumericColumn, *, bins: int = 10) -> NumericScores:
    """All numeric drift scores of ``cur`` against ``ref`` from their sketches (both must have values)."""
    r, c = sketch_cdf(ref), sketch_cdf(cur)
    var = (ref.sumsq - ref.sum * ref.sum / ref.count) / ref.count
    return scores_from_cdfs(r, c, ref.mean, cur.mean, reference_scale(var, ref.mean, r), bins=bins)


def exact_numeric_scores(ref: np.ndarray, cur: np.ndarray, *, bins: int = 10) -> dict[str, float]:
    """The same scores on raw finite arrays, exactly (what the sketch-based ones are tested against)."""
    r, c = np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64)
    rc = SketchCDF.from_values(r)
    s = scores_from_cdfs(rc, SketchCDF.from_values(c), float(r.mean()), float(c.mean()),
                         reference_scale(float(np.var(r)), float(r.mean()), rc), bins=bins)
    return s.as_dict()
