"""Drift scores for numeric columns, from KLL sketches and exact moments.

Every method reads the two columns' CDFs or quantile functions from their sketches:

* KS distance: the largest gap between the two CDFs, evaluated on the union of both sketches'
  quantiles at ``grid`` ranks (dense enough that the grid adds at most ``1/grid`` of error).
* PSI, Jensen-Shannon and Hellinger on ``bins`` reference-quantile bins ``(e[i-1], e[i]]``.
* Wasserstein-1 as the mean gap between the two quantile functions, divided by the reference's
  standard deviation (exact, from the sums of values and squares).

``exact_numeric_scores`` computes the same quantities on raw arrays, for tests and benchmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..columns import NumericColumn
from .distributions import ks_p_value
from .divergence import hellinger, jensen_shannon, psi

__all__ = ["NumericScores", "exact_numeric_scores", "numeric_scores"]

QUANTILE_RANKS = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True, slots=True)
class NumericScores:
    """Scores of one numeric column; ``rank_error`` is the sketches' combined KS error bound."""

    ks: float
    ks_p_value: float
    psi: float
    jensen_shannon: float
    hellinger: float
    wasserstein: float
    mean_shift: float
    quantile_shifts: dict[str, float]
    rank_error: float
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
        return d


def _scale(std: float, mean: float) -> float:
    """The reference scale that normalises Wasserstein and shifts; never zero."""
    if math.isfinite(std) and std > 0:
        return std
    return max(abs(mean), 1.0) if math.isfinite(mean) else 1.0


def _binned(edges: np.ndarray, cdf_ref: np.ndarray, cdf_cur: np.ndarray) -> tuple[float, float, float]:
    """PSI, JS and Hellinger from CDF values at the inner bin edges."""
    p = np.diff(np.concatenate(([0.0], cdf_ref, [1.0])))
    q = np.diff(np.concatenate(([0.0], cdf_cur, [1.0])))
    p = np.clip(p, 0.0, 1.0)
    q = np.clip(q, 0.0, 1.0)
    p, q = p / p.sum(), q / q.sum()
    return psi(p, q), jensen_shannon(p, q), hellinger(p, q)


def numeric_scores(ref: NumericColumn, cur: NumericColumn, *, bins: int = 10, grid: int = 256) -> NumericScores:
    """All numeric drift scores of ``cur`` against ``ref`` from their sketches (both must have values).

    Two quantile queries and two CDF queries per column pair: every rank and point any method needs
    is asked for at once, because each sketch query costs far more than the numpy around it.
    """
    grid_ranks = np.linspace(0.0, 1.0, grid + 1)
    bin_ranks = np.arange(1, bins) / bins
    shift_ranks = np.asarray(QUANTILE_RANKS)
    q_ref_all = ref.quantiles(np.concatenate((grid_ranks, bin_ranks, shift_ranks)))
    q_cur_all = cur.quantiles(np.concatenate((grid_ranks, shift_ranks)))
    n_grid = grid + 1
    q_ref, edges_raw, shift_ref = q_ref_all[:n_grid], q_ref_all[n_grid:n_grid + bins - 1], q_ref_all[n_grid + bins - 1:]
    q_cur, shift_cur = q_cur_all[:n_grid], q_cur_all[n_grid:]
    points = np.unique(np.concatenate((q_ref, q_cur)).astype(np.float32))
    edges = np.unique(edges_raw.astype(np.float32))
    if edges.size == 0:  # one distinct reference value: two bins, at it and above it
        edges = np.array([ref.min], dtype=np.float32)
    everything = np.unique(np.concatenate((points, edges)))
    cdf_r_all, cdf_c_all = ref.cdf(everything), cur.cdf(everything)
    at_points = np.searchsorted(everything, points)
    at_edges = np.searchsorted(everything, edges)
    cdf_r, cdf_c = cdf_r_all[at_points], cdf_c_all[at_points]
    ks = float(np.max(np.abs(cdf_r - cdf_c))) if points.size else 0.0
    rank_error = ref.rank_error + cur.rank_error
    # the p-value is computed from the distance less the sketches' error: conservative, never flattering
    p_value = ks_p_value(max(ks - rank_error, 0.0), ref.count, cur.count)
    psi_v, js_v, hel_v = _binned(edges, cdf_r_all[at_edges], cdf_c_all[at_edges])

    scale = _scale(ref.std * math.sqrt((ref.count - 1) / ref.count) if ref.count > 1 else math.nan, ref.mean)
    # W1 = integral of |F_ref - F_cur| dx, the CDFs being steps at the grid points
    w1 = float(np.sum(np.abs(cdf_r - cdf_c)[:-1] * np.diff(points.astype(np.float64)))) / scale
    qs = dict(zip((f"p{int(r * 100)}" for r in QUANTILE_RANKS), ((shift_cur - shift_ref) / scale).tolist(),
                  strict=True))
    return NumericScores(
        ks=ks, ks_p_value=p_value, psi=psi_v, jensen_shannon=js_v, hellinger=hel_v, wasserstein=w1,
        mean_shift=(cur.mean - ref.mean) / scale, quantile_shifts=qs, rank_error=rank_error,
        n_ref=ref.count, n_cur=cur.count,
    )


def exact_numeric_scores(ref: np.ndarray, cur: np.ndarray, *, bins: int = 10) -> dict[str, float]:
    """The same scores on raw finite arrays, exactly (KS over all points; bins from exact quantiles)."""
    r = np.sort(np.asarray(ref, dtype=np.float64))
    c = np.sort(np.asarray(cur, dtype=np.float64))
    allv = np.concatenate((r, c))
    ks = float(np.max(np.abs(np.searchsorted(r, allv, "right") / r.size - np.searchsorted(c, allv, "right") / c.size)))
    edges = np.unique(np.quantile(r, np.arange(1, bins) / bins, method="inverted_cdf"))
    if edges.size == 0:
        edges = r[:1]
    cdf_r = np.searchsorted(r, edges, "right") / r.size
    cdf_c = np.searchsorted(c, edges, "right") / c.size
    psi_v, js_v, hel_v = _binned(edges, cdf_r, cdf_c)
    scale = _scale(float(np.std(r)), float(np.mean(r)))
    # W1 between empirical distributions: integral of |F_r - F_c| over x
    allv_sorted = np.sort(allv)
    gaps = np.abs(np.searchsorted(r, allv_sorted[:-1], "right") / r.size
                  - np.searchsorted(c, allv_sorted[:-1], "right") / c.size)
    w1 = float(np.sum(gaps * np.diff(allv_sorted))) / scale
    return {"ks": ks, "psi": psi_v, "jensen_shannon": js_v, "hellinger": hel_v, "wasserstein": w1}
