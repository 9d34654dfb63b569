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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..columns import NumericColumn, kll_levels
from .distributions import ks_p_value
from .divergence import hellinger_rows, jensen_shannon_rows, psi_rows
from .memo import BytesMemo
from .stepcdf import RowCDFs, SketchCDF, searchsorted_rows, sketch_cdf

__all__ = [
    "QUANTILE_RANKS",
    "REFERENCE_CACHE_BYTES",
    "REFERENCE_STEPS",
    "NumericScores",
    "ReferenceSteps",
    "SketchCDF",
    "binned_masses",
    "exact_numeric_scores",
    "numeric_scores",
    "numeric_scores_many",
    "reference_steps",
    "sketch_cdf",
]

QUANTILE_RANKS = (0.05, 0.25, 0.5, 0.75, 0.95)
NUMERIC_METHODS = ("ks", "psi", "jensen_shannon", "hellinger", "wasserstein")


@dataclass(frozen=True, slots=True)
class NumericScores:
    """Scores of one numeric column.

    ``effects`` holds the versions with the sketches' noise taken out (CDF gaps shrunk in quadrature
    by the typical error; KS by ``rank_error``, the two sketches' combined bound); ``ks_p_value`` is
    computed from the KS distance less ``rank_error``, so it is conservative. ``outside``: the
    current's shares strictly below and strictly above the reference's exact [min, max] from the
    current sketch, when the scores were computed from columns (the ``out_of_range`` signal's input,
    as ``kll.get_cdf`` gives them: the same weights over the same total).
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
    outside: tuple[float, float] | None = None

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


def reference_scale(var: float, mean: float, ref: SketchCDF | Callable[[], SketchCDF]) -> float:
    """The scale that normalises Wasserstein and shifts: the reference's population std, never zero.

    The exact variance comes from sums of values and squares; when the mean dwarfs the spread
    (``mean^2 / var > 1e8``) that subtraction has lost most of its digits, so the sketch's own
    spread is used instead (``ref`` may be a function that builds the CDF only then). A constant
    reference falls back to ``max(|mean|, 1)``.
    """
    if math.isfinite(var) and var > 0 and mean * mean / var < 1e8:
        return math.sqrt(var)
    cdf = ref if isinstance(ref, SketchCDF) else ref()
    if cdf.n > 0:
        s = cdf.std()
        if s > 0:
            return s
    return max(abs(mean), 1.0) if math.isfinite(mean) else 1.0


def binned_masses(cdf: SketchCDF, edges: np.ndarray) -> np.ndarray:
    """Masses of the bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    return np.diff(np.concatenate(([0.0], cdf.cdf(edges), [1.0])))


EDGE_SNAP = 0.02
"""Rank distance within which a bin edge snaps to the nearest step of the reference CDF."""


def stable_edge_rows(ref: RowCDFs, bins: int, snap: float = EDGE_SNAP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference-quantile bin edges that do not flip with sketch noise on tied data, for every row.

    The plain edge ``Q_R(i / bins)`` jumps from one tied value to the next when the target rank sits
    near the top of a point mass (a tied value's CDF at 0.3 and a target of 0.3): sketch noise of a
    few thousandths then moves the whole point mass between bins, and identical runs disagree. Here
    each edge is the item whose CDF step top lies nearest the target rank when that distance is within
    ``snap`` (2% of the rank by default, beyond any sketch's rank error), else the plain quantile. So
    a large point mass always stays on the same side of an edge, and an edge only ever moves across
    mass of at most ``2 * snap``. On continuous data a step top lies within ``1/n`` of every target,
    so the edges are the usual quantiles. No bin is narrower than ``snap`` of the reference: a sliver
    next to a point mass (its edge one item past the mass) would hold a few rows whose sketch noise
    the divergences magnify.

    Returns ``(edges, tops, kept)``, each ``(rows, bins - 1)``: candidate edges in increasing order,
    the reference CDF at each, and which of them are the row's edges.
    """
    targets = np.broadcast_to(np.arange(1, bins) / bins, (ref.count.size, bins - 1))
    tops = ref.cum / np.repeat(ref.n, ref.count)  # CDF at each item: the top of its step
    last = (ref.count - 1)[:, None]
    right = np.minimum(searchsorted_rows(tops, ref.start, ref.count, targets, "left"), last)
    left = np.maximum(right - 1, 0)
    near_left = np.abs(ref.take(tops, left) - targets) <= np.abs(ref.take(tops, right) - targets)
    nearest = np.where(near_left, left, right)
    close = np.abs(ref.take(tops, nearest) - targets) <= snap
    idx = np.sort(np.where(close, nearest, ref.quantile_index(targets[0])), axis=1)  # items strictly increase
    distinct = np.ones(idx.shape, dtype=bool)
    distinct[:, 1:] = idx[:, 1:] != idx[:, :-1]
    top = ref.take(tops, idx)
    kept = np.zeros(idx.shape, dtype=bool)
    floor = np.zeros(ref.count.size)
    for j in range(idx.shape[1]):  # greedy, left to right, as bins - 1 vector steps
        keep = distinct[:, j] & (top[:, j] - floor >= snap) & (1.0 - top[:, j] >= snap)
        kept[:, j] = keep
        floor = np.where(keep, top[:, j], floor)
    return ref.take(ref.items, idx), top, kept


def stable_edges(ref: SketchCDF, bins: int, snap: float = EDGE_SNAP) -> np.ndarray:
    """The edges :func:`stable_edge_rows` picks for one CDF."""
    if ref.items.size == 0:
        return ref.items
    rows = RowCDFs(ref.items, ref.cum, np.zeros(1, dtype=np.intp), np.array([ref.items.size]), np.array([ref.n]))
    edges, _, kept = stable_edge_rows(rows, bins, snap)
    return edges[0][kept[0]]


def _shrink(gap: np.ndarray, eps: np.ndarray | float) -> np.ndarray:
    """Move every CDF gap toward zero in quadrature: ``sign(g) sqrt(max(g^2 - eps^2, 0))``.

    The least drift the sketches' noise explains: a gap at the noise level ``eps`` becomes 0, while a
    gap several times larger keeps almost all of itself (``0.06`` less ``0.005`` stays ``0.0598``), so
    a real change, such as a scale change whose CDF gap is small everywhere, never becomes
    unflaggable, and the shrink vanishes as the sketches grow exact.
    """
    return np.sign(gap) * np.sqrt(np.maximum(gap * gap - eps * eps, 0.0))


RMS_PER_BOUND = 1.0 / 2.576
"""A KLL rank-error bound holds at 99% confidence; the typical (rms) error is about ``bound / 2.576``."""


def _binned_rows(p_cum: np.ndarray, q_cum: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ends = (np.zeros((p_cum.shape[0], 1)), np.ones((p_cum.shape[0], 1)))
    p = np.clip(np.diff(np.concatenate((ends[0], p_cum, ends[1]), axis=1), axis=1), 0.0, 1.0)
    q = np.clip(np.diff(np.concatenate((ends[0], q_cum, ends[1]), axis=1), axis=1), 0.0, 1.0)
    p, q = p / p.sum(axis=1, keepdims=True), q / q.sum(axis=1, keepdims=True)
    return psi_rows(p, q), jensen_shannon_rows(p, q), hellinger_rows(p, q)


@dataclass(frozen=True, slots=True)
class NumericSide:
    """One side of a comparison as the scores need it: retained items, their weights (run-length
    coded: ``run_weights[i]`` for the next ``run_lengths[i]`` items, as a KLL sketch's levels are), and
    exact moments."""

    items: np.ndarray
    run_weights: np.ndarray
    run_lengths: np.ndarray
    rank_error: float
    mean: float
    var: float

    @classmethod
    def of_column(cls, col: NumericColumn, sketch: bytes | None = None) -> NumericSide:
        """``sketch``: the column's serialized KLL sketch, when the caller already has it."""
        items, weights, lengths = kll_levels(col.kll.serialize() if sketch is None else sketch)
        return cls(items, weights, lengths, *_moments(col))

    @classmethod
    def of_values(cls, values: np.ndarray) -> NumericSide:
        items, counts = np.unique(values, return_counts=True)
        return cls(items, counts.astype(np.float64), np.ones(items.size, dtype=np.intp), 0.0,
                   float(values.mean()), float(np.var(values)))


def _moments(col: NumericColumn) -> tuple[float, float, float]:
    """A column's rank error (0 while its sketch holds every value), exact mean and population variance."""
    exact = not col.kll.is_estimation_mode()
    var = (col.sumsq - col.sum * col.sum / col.count) / col.count
    return 0.0 if exact else float(col.kll.normalized_rank_error(False)), col.mean, var


@dataclass(frozen=True, slots=True)
class ReferenceSteps:
    """What a reference sketch brings to every comparison with it, decided by its items alone.

    ``entries``: its items as complex numbers, item plus ``i`` times its weight negated, stably
    sorted (``n``: their total weight): the reference's part of every union grid (:func:`_pair_grid`), which then only merges
    the current side in. ``edges``, ``tops``, ``kept``: its candidate bin edges, the reference CDF at
    each and which are the edges (:func:`stable_edge_rows`). ``quantiles``: at :data:`QUANTILE_RANKS`.
    The service compares one stored reference with window after window, so numeric scores of sketch
    columns keep these per distinct sketch (:data:`REFERENCE_STEPS`); every score is the same with
    or without them.
    """

    entries: np.ndarray
    n: float
    edges: np.ndarray
    tops: np.ndarray
    kept: np.ndarray
    quantiles: np.ndarray

    def cdf(self) -> SketchCDF:
        """The step CDF (only the reference scale's fallback to the sketch's own spread needs it)."""
        x, w = self.entries.real, -self.entries.imag
        last = np.ones(x.size, dtype=bool)
        np.not_equal(x[1:], x[:-1], out=last[:-1])
        return SketchCDF(x[last].copy(), np.cumsum(w)[last])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.entries, self.edges, self.tops, self.kept, self.quantiles))


REFERENCE_CACHE_BYTES = 32 << 20
"""Budget of :data:`REFERENCE_STEPS`: about 20 KB per column at the default ``kll_k``, so a reference of
1,500 numeric columns fits; least recently used sketches go first."""

REFERENCE_STEPS: BytesMemo[ReferenceSteps] = BytesMemo(
    REFERENCE_CACHE_BYTES, lambda key, steps: len(key[0]) + steps.nbytes + 200)  # type: ignore[index]
"""Each reference sketch's :class:`ReferenceSteps`, keyed on ``(serialized sketch, bins)``."""


def _padded_entries(sides: Sequence[NumericSide], signs: Sequence[float], width: int,
                    offsets: np.ndarray | None = None, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row ``r`` holds side ``r``'s items, each plus ``i`` times its weight times ``signs[r]``, from
    column ``offsets[r]`` (0); the rest of each row stays as it was (the caller fills it).

    Returns the rows (flat, ``len(sides) * width``; ``out`` when given) and the flat index of each
    written entry.
    """
    sizes = np.array([s.items.size for s in sides], dtype=np.intp)
    base = np.arange(len(sides)) * width + (0 if offsets is None else offsets)
    dest = np.arange(int(sizes.sum())) + np.repeat(base - (np.cumsum(sizes) - sizes), sizes)
    weights = np.repeat(np.concatenate([s.run_weights for s in sides]), np.concatenate([s.run_lengths for s in sides]))
    weights *= np.repeat(np.asarray(signs, dtype=np.float64), sizes)
    z = np.empty(len(sides) * width, dtype=np.complex128) if out is None else out
    z.real[dest] = np.concatenate([s.items for s in sides])  # not items + 1j * w: that loses the sign of -0.0
    z.imag[dest] = weights
    return z, dest


def _pads(tot: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows shorter than ``width``, and the (row in those, column) and flat index of every pad."""
    short = np.flatnonzero(tot < width)
    pads = (np.arange(width) >= tot[short, None]).nonzero()
    return short, pads[0], short[pads[0]] * width + pads[1]


def reference_steps(sides: Sequence[NumericSide], bins: int) -> list[ReferenceSteps]:
    """The :class:`ReferenceSteps` of each reference side (both must hold values), in chunks of
    about :data:`CHUNK_CELLS` items."""
    out: list[ReferenceSteps] = []
    steps = _RowsOut(sum(s.items.size for s in sides), len(sides))
    entries: list[np.ndarray] = []
    start = 0
    while start < len(sides):
        stop, width = start + 1, sides[start].items.size
        while stop < len(sides) and (stop + 1 - start) * max(width, sides[stop].items.size) <= CHUNK_CELLS:
            width = max(width, sides[stop].items.size)
            stop += 1
        chunk = sides[start:stop]
        size = np.array([s.items.size for s in chunk], dtype=np.intp)
        z, _ = _padded_entries(chunk, [-1.0] * len(chunk), width)
        _, _, pad_at = _pads(size, width)
        z[pad_at] = np.inf
        z = np.sort(z.reshape(len(chunk), width), axis=1, kind="stable")  # as the union grid sorts them
        entries.extend(z[r, :size[r]].copy() for r in range(len(chunk)))
        x, w = np.ascontiguousarray(z.real), np.ascontiguousarray(z.imag)
        last = np.ones(x.shape, dtype=bool)  # last entry of each run of equal items, pads apart
        np.not_equal(x[:, 1:], x[:, :-1], out=last[:, :-1])
        last &= np.arange(width) < size[:, None]
        steps.add(last, x, np.cumsum(np.maximum(-w, 0.0), axis=1))
        start = stop
    rows = steps.all()
    edges, tops, kept = stable_edge_rows(rows, bins)
    quantiles = rows.quantiles(QUANTILE_RANKS)
    for a in (*entries, edges, tops, kept, quantiles):  # shared through the memo: nobody may write them
        a.flags.writeable = False
    for r, e in enumerate(entries):
        out.append(ReferenceSteps(e, float(rows.n[r]), edges[r], tops[r], kept[r], quantiles[r]))
    return out


@dataclass(frozen=True, slots=True)
class _Reference:
    """A pair's reference side: its steps, rank error and exact moments."""

    steps: ReferenceSteps
    rank_error: float
    mean: float
    var: float

    @property
    def size(self) -> int:
        return int(self.steps.entries.size)


class _Workspace:
    """Grid-sized scratch arrays that every chunk of one report reuses.

    A fresh array of a chunk's size (about 0.5 MB) is handed out by malloc as new pages, and the
    page faults of a dozen such arrays per chunk cost about as much as all the arithmetic on them
    (bench/bench_service.py ran 30-40% faster with malloc told to keep freed memory). Written with
    ``out=``, the numbers are the same operations on the same values, so the same bits.
    """

    def __init__(self, cells: int) -> None:
        self.z = np.empty(cells, dtype=np.complex128)
        self.f = [np.empty(cells) for _ in range(5)]
        self.b = [np.empty(cells, dtype=bool) for _ in range(2)]

    @staticmethod
    def view(buf: np.ndarray, rows: int, cols: int) -> np.ndarray:
        return buf[:rows * cols].reshape(rows, cols)


def _pair_grid(pairs: Sequence[tuple[_Reference, NumericSide]], ws: _Workspace) -> dict[str, np.ndarray]:
    """Both sides of every pair sorted together, one row per pair: the union of their steps.

    Each entry is one complex number, the item plus ``i`` times its weight (negated for the
    reference), so one sort orders the items and carries their weights and sides along; within a run
    of equal items the reference's entries come first, and the run's last entry carries both CDFs at
    that item. Rows are padded with their largest item (zero-width steps with both CDFs at 1, never
    part of a run). The reference's entries arrive sorted (:class:`ReferenceSteps`): a stable sort of
    them followed by the current's raw entries orders every entry exactly as sorting all of them raw.
    The arrays returned are views of ``ws``: valid until the next chunk.
    """
    nr = np.array([r.size for r, _ in pairs], dtype=np.intp)
    nc = np.array([c.items.size for _, c in pairs], dtype=np.intp)
    tot = nr + nc
    p, width = len(pairs), int(tot.max())
    z, _ = _padded_entries([c for _, c in pairs], [1.0] * p, width, nr, ws.z[:p * width])
    dest = np.arange(int(nr.sum())) + np.repeat(np.arange(p) * width - (np.cumsum(nr) - nr), nr)
    z[dest] = np.concatenate([r.steps.entries for r, _ in pairs])
    short, pad_row, pad_at = _pads(tot, width)
    z[pad_at] = np.inf
    z = z.reshape(p, width)
    z.sort(axis=1, kind="stable")  # by item, then signed weight
    # contiguous copies: every pass below reads them, and strided views of complex numbers are slow
    x, w, cum_r, cum_c, tmp = (ws.view(f, p, width) for f in ws.f)
    end, cur_step = (ws.view(b, p, width) for b in ws.b)
    np.copyto(x, z.real)
    np.copyto(w, z.imag)
    end[:, -1] = True  # last entry of a run of equal items (pads, +inf, run apart)
    np.not_equal(x[:, 1:], x[:, :-1], out=end[:, :-1])
    x.ravel()[pad_at] = x[short, tot[short] - 1][pad_row]  # pads sort last: same places as before the sort
    # pads weigh 0; sums of powers of two below 2**53 are exact, so any order of the additions agrees
    np.cumsum(np.maximum(np.negative(w, out=tmp), 0.0, out=tmp), axis=1, out=cum_r)
    np.cumsum(np.maximum(w, 0.0, out=tmp), axis=1, out=cum_c)
    np.logical_and(np.greater(w, 0.0, out=cur_step), end, out=cur_step)
    return {"x": x, "end": end, "cum_r": cum_r, "cum_c": cum_c, "cur_step": cur_step, "tmp": tmp}


class _RowsOut:
    """Step CDFs written row after row into arrays sized for every pair of a report (each side has at
    most as many steps as retained items), so the chunks' rows end up end to end without a copy."""

    def __init__(self, capacity: int, rows: int) -> None:
        self.items, self.cum = np.empty(capacity), np.empty(capacity)
        self.count, self.n = np.empty(rows, dtype=np.intp), np.empty(rows)
        self.used, self.rows = 0, 0

    def add(self, mask: np.ndarray, x: np.ndarray, cum: np.ndarray) -> RowCDFs:
        """Append the entries of each row of a chunk where ``mask`` holds; returns the chunk's rows."""
        count = np.count_nonzero(mask, axis=1)
        sel = np.flatnonzero(mask)  # indices once, then two takes: several times faster than two boolean masks
        a, b, r = self.used, self.used + sel.size, self.rows
        # mode="clip" (every index is in range anyway): take() buffers its output in the default mode
        x.ravel().take(sel, out=self.items[a:b], mode="clip")
        cum.ravel().take(sel, out=self.cum[a:b], mode="clip")
        self.count[r:r + count.size] = count
        self.n[r:r + count.size] = cum[:, -1]
        self.used, self.rows = b, r + count.size
        return RowCDFs(self.items[a:b], self.cum[a:b], np.cumsum(count) - count, count, self.n[r:r + count.size])

    def all(self) -> RowCDFs:
        count = self.count[:self.rows]
        return RowCDFs(self.items[:self.used], self.cum[:self.used], np.cumsum(count) - count, count,
                       self.n[:self.rows])


@dataclass(frozen=True, slots=True)
class _GridPart:
    """What one chunk's union grid yields per pair (in chunk order): the KS distance and the
    Wasserstein area; the current sides' step CDFs go to the report's :class:`_RowsOut`."""

    ks: np.ndarray
    area: np.ndarray


def _grid_chunk(pairs: Sequence[tuple[_Reference, NumericSide]], curs: _RowsOut, ws: _Workspace) -> _GridPart:
    """The scores that need both sides' items in one order (KS, the Wasserstein area) for one chunk of
    pairs; each current side's step CDF is appended to ``curs`` for the scores that need one side."""
    g = _pair_grid(pairs, ws)
    x, end, cum_r, cum_c, tmp = g["x"], g["end"], g["cum_r"], g["cum_c"], g["tmp"]
    cur = curs.add(g["cur_step"], x, cum_c)
    n_ref = cum_r[:, -1].copy()
    # typical combined CDF error at one point: the two sketches' rms errors in quadrature
    rms = np.array([math.hypot(r.rank_error, c.rank_error) * RMS_PER_BOUND for r, c in pairs])[:, None]
    # gap = cum_c / m - cum_r / n, in place (the cumulative weights are compacted already)
    gap = np.subtract(np.divide(cum_c, cur.n[:, None], out=cum_c), np.divide(cum_r, n_ref[:, None], out=cum_r),
                      out=cum_c)
    # inside a run only its last entry has both CDFs
    ks = np.max(np.abs(gap, out=tmp), axis=1, where=end, initial=0.0)
    # W1 = integral of |gap| = A+ + A-; the step CDFs are constant between steps (inside a run dx = 0)
    p, width = x.shape
    dx = np.subtract(x[:, 1:], x[:, :-1], out=ws.view(ws.f[4], p, width - 1))  # np.diff
    term = ws.view(ws.f[1], p, width - 1)  # the weights' buffer, free now
    gp = gap[:, :-1]
    # W1 from the gaps with the typical sketch error taken out in quadrature (noise-only crossings of
    # the two CDFs vanish, real gaps keep almost all of themselves), never below the exact |mean
    # difference| (A+ - A- = mu_R - mu_C, and the profiles carry exact sums). With exact CDFs this is
    # the integral of |gap| itself. It is both the score and the effect: more accurate than the raw
    # integral on every measured shape (docs/statistics.md).
    # |shrunk gap| is sqrt(max(g^2 - rms^2, 0)); with rms = 0 that is |g| exactly (sqrt(g*g) == |g|)
    np.multiply(gp, gp, out=term)
    np.subtract(term, rms * rms, out=term)
    np.sqrt(np.maximum(term, 0.0, out=term), out=term)
    area = np.sum(np.multiply(term, dx, out=term), axis=1)
    return _GridPart(ks, area)


def _score_rows(pairs: Sequence[tuple[_Reference, NumericSide]], grids: Sequence[_GridPart], cur: RowCDFs,
                bins: int, ranges: np.ndarray | None) -> list[NumericScores]:
    """Every score of ``pairs`` from their chunks' grid parts (``grids`` covers ``pairs`` in order), the
    references' steps and the current sides' step CDFs (one row per pair), asked for all pairs at once."""
    ks, area = np.concatenate([g.ks for g in grids]), np.concatenate([g.area for g in grids])
    eps = np.array([r.rank_error + c.rank_error for r, c in pairs])
    rms = np.array([math.hypot(r.rank_error, c.rank_error) * RMS_PER_BOUND for r, c in pairs])[:, None]
    scale = np.array([reference_scale(r.var, r.mean, r.steps.cdf) for r, _ in pairs])
    net = np.abs(np.array([c.mean - r.mean for r, c in pairs]))
    w1 = np.maximum(area, net) / scale
    edges = np.stack([r.steps.edges for r, _ in pairs])
    p_top = np.stack([r.steps.tops for r, _ in pairs])
    kept = np.stack([r.steps.kept for r, _ in pairs])
    n_ref = np.array([r.steps.n for r, _ in pairs])
    # bins between candidate edges that were not kept get zero mass on both sides: they add nothing
    p_cum = np.maximum.accumulate(np.where(kept, p_top, 0.0), axis=1)
    q_cum = np.maximum.accumulate(np.where(kept, cur.cdf(edges), 0.0), axis=1)
    psi_v, js_v, hel_v = _binned_rows(p_cum, q_cum)
    psi_e, js_e, hel_e = _binned_rows(p_cum, p_cum + _shrink(q_cum - p_cum, rms))
    shrunk = rms[:, 0] > 0
    psi_e, js_e, hel_e = (np.where(shrunk, np.minimum(e, v), v) for e, v in ((psi_e, psi_v), (js_e, js_v),
                                                                              (hel_e, hel_v)))
    # KS is a maximum over many points, so its noise is the 99% bound, not the typical error
    ks_e = np.sqrt(np.maximum(ks * ks - eps * eps, 0.0))
    shifts = (cur.quantiles(QUANTILE_RANKS) - np.stack([r.steps.quantiles for r, _ in pairs])) / scale[:, None]
    if ranges is None:
        outside: list[tuple[float, float] | None] = [None] * len(pairs)
    else:  # weight strictly below the reference min and at or below its max
        below, upto = cur.cdf(ranges[:, :1], inclusive=False)[:, 0], cur.cdf(ranges[:, 1:])[:, 0]
        outside = list(zip(below.tolist(), (1.0 - upto).tolist(), strict=True))
    out = []
    names = [f"p{round(r * 100)}" for r in QUANTILE_RANKS]
    cols = zip(ks.tolist(), eps.tolist(), n_ref.tolist(), cur.n.tolist(), psi_v.tolist(), js_v.tolist(),
               hel_v.tolist(), w1.tolist(), ks_e.tolist(), psi_e.tolist(), js_e.tolist(), hel_e.tolist(),
               scale.tolist(), shifts.tolist(), outside, strict=True)
    for (r, c), (ks_, eps_, n_r, n_c, psi_, js_, hel_, w1_, kse, pse, jse, hee, sc, sh, out_) in zip(pairs, cols,
                                                                                                    strict=True):
        # the test stays conservative: the KS distance less the full bound of both sketches
        out.append(NumericScores(
            ks=ks_, ks_p_value=ks_p_value(max(ks_ - eps_, 0.0), n_r, n_c), psi=psi_, jensen_shannon=js_,
            hellinger=hel_, wasserstein=w1_, mean_shift=(c.mean - r.mean) / sc,
            quantile_shifts=dict(zip(names, sh, strict=True)), rank_error=eps_,
            effects={"ks": kse, "psi": pse, "jensen_shannon": jse, "hellinger": hee, "wasserstein": w1_},
            n_ref=int(n_r), n_cur=int(n_c), outside=out_))
    return out


CHUNK_CELLS = 1 << 16
"""Padded grid cells merged in one go: large enough that numpy's per-call cost vanishes, small enough
to stay in cache."""


def _scores(pairs: Sequence[tuple[_Reference, NumericSide]], bins: int,
            ranges: np.ndarray | None = None) -> list[NumericScores]:
    """Pairs of similar size share a union grid, in chunks of about :data:`CHUNK_CELLS` cells; the
    scores that need one side at a time (CDFs at the edges, quantiles) are then asked for all pairs.
    ``ranges``: each reference's exact (min, max), for :attr:`NumericScores.outside`."""
    if not pairs:
        return []
    order = sorted(range(len(pairs)), key=lambda i: pairs[i][0].size + pairs[i][1].items.size)
    grids, start = [], 0
    curs = _RowsOut(sum(c.items.size for _, c in pairs), len(pairs))
    chunks = []
    while start < len(order):
        stop = start + 1
        while stop < len(order):
            width = pairs[order[stop]][0].size + pairs[order[stop]][1].items.size
            if (stop + 1 - start) * width > CHUNK_CELLS:
                break
            stop += 1
        chunks.append([pairs[i] for i in order[start:stop]])
        start = stop
    ws = _Workspace(max(len(c) * max(r.size + s.items.size for r, s in c) for c in chunks))
    grids = [_grid_chunk(c, curs, ws) for c in chunks]
    scored = _score_rows([pairs[i] for i in order], grids, curs.all(), bins,
                         None if ranges is None else ranges[order])
    out: list[NumericScores | None] = [None] * len(pairs)
    for i, s in zip(order, scored, strict=True):
        out[i] = s
    return [s for s in out if s is not None]


def scores_of_sides(pairs: Sequence[tuple[NumericSide, NumericSide]], *, bins: int = 10) -> list[NumericScores]:
    """Every numeric score of each (reference, current) pair; both sides must hold values."""
    steps = reference_steps([r for r, _ in pairs], bins)
    return _scores([(_Reference(st, r.rank_error, r.mean, r.var), c) for st, (r, c) in zip(steps, pairs, strict=True)],
                   bins)


def numeric_scores_many(pairs: Sequence[tuple[NumericColumn, NumericColumn]], *, bins: int = 10,
                        cache: bool = True) -> list[NumericScores]:
    """:func:`numeric_scores` of many column pairs at once (a report's numeric columns).

    With ``cache`` each reference sketch's :class:`ReferenceSteps` come from :data:`REFERENCE_STEPS`
    when it was compared before (and are kept there otherwise); the scores are the same either way.
    """
    found: list[ReferenceSteps | None] = []
    missing: list[int] = []
    sketches = [r.kll.serialize() for r, _ in pairs]
    for i, data in enumerate(sketches):
        steps = REFERENCE_STEPS.get((data, bins)) if cache else None
        found.append(steps)
        if steps is None:
            missing.append(i)
    if missing:
        made = reference_steps([NumericSide.of_column(pairs[i][0], sketches[i]) for i in missing], bins)
        for i, steps in zip(missing, made, strict=True):
            found[i] = steps
            if cache:
                REFERENCE_STEPS.put((sketches[i], bins), steps)
    refs = [_Reference(st, *_moments(r)) for st, (r, _) in zip(found, pairs, strict=True) if st is not None]
    ranges = np.array([(r.min, r.max) for r, _ in pairs], dtype=np.float64).reshape(len(pairs), 2)
    return _scores(list(zip(refs, [NumericSide.of_column(c) for _, c in pairs], strict=True)), bins, ranges)


def numeric_scores(ref: NumericColumn, cur: NumericColumn, *, bins: int = 10) -> NumericScores:
    """All numeric drift scores of ``cur`` against ``ref`` from their sketches (both must have values)."""
    return numeric_scores_many([(ref, cur)], bins=bins)[0]


def exact_numeric_scores(ref: np.ndarray, cur: np.ndarray, *, bins: int = 10) -> dict[str, float]:
    """The same scores on raw finite arrays, exactly (what the sketch-based ones are tested against)."""
    r, c = np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64)
    return scores_of_sides([(NumericSide.of_values(r), NumericSide.of_values(c))], bins=bins)[0].as_dict()
