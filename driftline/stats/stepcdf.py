"""Step CDFs read out of KLL sketches, one at a time (:class:`SketchCDF`) or many as rows (:class:`RowCDFs`).

A report over a thousand features asks the same few questions of two thousand sketches; asked one
sketch at a time, numpy's per-call overhead is most of the cost. :class:`RowCDFs` holds many step
CDFs as the rows of padded 2-D arrays and answers each question for every row in a handful of numpy
calls, with exactly the semantics of the one-at-a-time methods (:func:`searchsorted_rows` is
``np.searchsorted`` on every row at once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..columns import NumericColumn

__all__ = ["RowCDFs", "SketchCDF", "searchsorted_rows", "sketch_cdf"]


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
    exact = not col.kll.is_estimation_mode()
    return SketchCDF(sorted_items[last], cum_all[last], 0.0 if exact else float(col.kll.normalized_rank_error(False)))


def searchsorted_rows(values: np.ndarray, start: np.ndarray, count: np.ndarray, queries: np.ndarray,
                      side: str = "left") -> np.ndarray:
    """``np.searchsorted(values[start[r]:start[r] + count[r]], queries[r], side)`` for every row ``r`` at once.

    A binary search vectorised over rows and queries: ``bit_length(max count)`` rounds of a few
    numpy calls on ``queries``-shaped arrays, whatever the number of rows. No row reads outside its
    own slice of ``values``.
    """
    q = np.asarray(queries, dtype=np.float64)
    base = np.asarray(start, dtype=np.intp)[:, None]
    lo = np.zeros(q.shape, dtype=np.intp)
    hi = np.broadcast_to(np.asarray(count, dtype=np.intp)[:, None], q.shape).copy()
    top = values.size - 1
    for _ in range(int(np.max(count, initial=0)).bit_length()):
        mid = (lo + hi) >> 1
        v = values[np.minimum(base + mid, top)]
        below = v <= q if side == "right" else v < q
        active = lo < hi
        lo = np.where(active & below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)
    return lo


@dataclass(frozen=True, slots=True)
class RowCDFs:
    """Many step CDFs end to end: row ``r`` is ``items[start[r]:start[r] + count[r]]`` (strictly
    increasing) with cumulative weights ``cum`` and total weight ``n[r]``; every row has an item.

    Every method returns, per row, exactly what the same method of :class:`SketchCDF` returns for
    that row alone.
    """

    items: np.ndarray
    cum: np.ndarray
    start: np.ndarray
    count: np.ndarray
    n: np.ndarray

    def row(self, r: int, rank_error: float = 0.0) -> SketchCDF:
        """Row ``r`` as a :class:`SketchCDF`."""
        a, b = int(self.start[r]), int(self.start[r] + self.count[r])
        return SketchCDF(self.items[a:b].copy(), self.cum[a:b].copy(), rank_error)

    def take(self, which: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """``which[start[r] + idx[r, j]]``: items, cum or another per-item array at per-row indices."""
        return which[self.start[:, None] + idx]

    def cdf(self, x: np.ndarray, inclusive: bool = True) -> np.ndarray:
        """Share of weight ``<= x[r, j]`` (``<`` when not inclusive) in row ``r``."""
        idx = searchsorted_rows(self.items, self.start, self.count, x, "right" if inclusive else "left")
        below = np.where(idx > 0, self.take(self.cum, np.maximum(idx - 1, 0)), 0.0)
        return below / self.n[:, None]

    def quantile_index(self, ranks: np.ndarray | tuple[float, ...]) -> np.ndarray:
        """Per row, the index of the smallest item whose CDF reaches each rank (as :meth:`SketchCDF.quantiles`)."""
        target = np.asarray(ranks, dtype=np.float64)[None, :] * self.n[:, None]
        idx = searchsorted_rows(self.cum, self.start, self.count, target * (1 - 1e-12), "left")
        return np.minimum(idx, (self.count - 1)[:, None])

    def quantiles(self, ranks: np.ndarray | tuple[float, ...]) -> np.ndarray:
        return self.take(self.items, self.quantile_index(ranks))
