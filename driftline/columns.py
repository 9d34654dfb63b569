"""Mergeable per-column summaries: numeric (KLL + exact moments) and categorical (frequent items + HLL).

Every summary keeps exact counters next to its sketch, so totals survive any number of merges, and
the invariant ``valid + missing + nan + inf + invalid + absent == rows`` holds for each column of a
profile. ``absent`` counts rows of merged-in profiles that did not have the column at all.
"""

from __future__ import annotations

import math
import operator
import re
import struct
from typing import Any

import numpy as np
from datasketches import (
    frequent_items_error_type,
    frequent_strings_sketch,
    hll_sketch,
    hll_union,
    kll_doubles_sketch,
)

from .distinct import DEFAULT_DISTINCT_K, DistinctSample

__all__ = [
    "KLL_DOUBLES",
    "KLL_FLOATS",
    "DEFAULT_FI_LG_MAX",
    "DEFAULT_HLL_LG_K",
    "DEFAULT_KLL_K",
    "CategoricalColumn",
    "Column",
    "NumericColumn",
    "canonical_label",
    "kll_levels",
    "kll_weighted_items",
    "numeric_fields",
    "widen_kll_floats",
]

DEFAULT_KLL_K = 400
DEFAULT_FI_LG_MAX = 10
DEFAULT_HLL_LG_K = 11
KLL_DOUBLES = "doubles"
"""Item type of numeric columns' KLL sketches since wire format 2: float64 keeps 1e7 + N(0, 0.25)
and epoch milliseconds at full resolution (float32 has 24 bits: steps of 1 at 1e7, 2 minutes at 1.7e12)."""
KLL_FLOATS = "floats"
"""Item type of wire format 1's numeric sketches, read by widening each item to float64 (exact)."""


def widen_kll_floats(data: bytes) -> bytes:
    """Rewrite a serialized KLL *floats* sketch as the equal KLL *doubles* sketch (every float32 is a double).

    The two serializations differ only in item width: an 8-byte preamble, then for a full sketch
    ``n`` (8), ``min_k`` (2), ``num_levels`` (1), one unused byte and ``num_levels`` uint32 level
    offsets, then min, max and the retained items; a one-item sketch is the preamble and the item.
    """
    if len(data) < 8:
        raise ValueError("KLL sketch bytes are truncated")
    flags = data[3]
    if flags & 0x01:  # empty
        return data
    if flags & 0x04:  # one item, no level table
        (item,) = np.frombuffer(data, dtype="<f4", count=1, offset=8)
        with np.errstate(all="ignore"):
            return data[:8] + np.float64(item).astype("<f8").tobytes()
    num_levels = data[18]
    if not 1 <= num_levels <= _LEVEL_WEIGHTS.size:
        raise ValueError(f"KLL sketch has {num_levels} levels")
    head = 20 + 4 * num_levels
    items = np.frombuffer(data, dtype="<f4", offset=head)
    with np.errstate(all="ignore"):  # a hostile sketch may hold signalling NaNs: widened, then refused later
        return data[:head] + items.astype("<f8").tobytes()


_LEVEL_WEIGHTS = np.ldexp(1.0, np.arange(61))
_LEVEL_WEIGHTS.flags.writeable = False


def kll_levels(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The retained items of a serialized KLL *doubles* sketch with their weights, run-length coded.

    Returns ``(items, run_weights, run_lengths)``: the first ``run_lengths[0]`` items weigh
    ``run_weights[0]``, and so on. Level ``i`` of a KLL sketch holds items of weight ``2**i``; the
    serialization (see :func:`widen_kll_floats`) lists the level offsets, then min and max, then
    every retained item from level 0 up. Reading them here costs a few microseconds where the
    binding's per-item iterator costs about a millisecond per sketch, and that iterator
    (datasketches 5.2) gives every item weight 1 when level 0 is empty, as it often is after a merge.
    """
    if len(data) < 8:
        raise ValueError("KLL sketch bytes are truncated")
    flags = data[3]
    if flags & 0x01:  # empty
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.intp)
    if flags & 0x04:  # one item, no level table
        return np.frombuffer(data, dtype="<f8", count=1, offset=8), np.ones(1), np.ones(1, dtype=np.intp)
    num_levels = data[18]
    if not 1 <= num_levels <= _LEVEL_WEIGHTS.size:
        raise ValueError(f"KLL sketch has {num_levels} levels")
    head = 20 + 4 * num_levels
    levels = struct.unpack_from(f"<{num_levels}I", data, 20)
    items = np.frombuffer(data, dtype="<f8", offset=head + 16)
    lengths = [levels[i + 1] - levels[i] for i in range(num_levels - 1)]
    lengths.append(items.size - (levels[-1] - levels[0]))
    if min(lengths) < 0:
        raise ValueError("KLL sketch level table is inconsistent")
    return items, _LEVEL_WEIGHTS[:num_levels], np.array(lengths, dtype=np.intp)


def kll_weighted_items(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The retained (items, weights) of a serialized KLL *doubles* sketch (see :func:`kll_levels`)."""
    items, weights, lengths = kll_levels(data)
    return items, np.repeat(weights, lengths)


def _writable(values: np.ndarray) -> np.ndarray:
    """A contiguous writable float64 array (the sketch binding refuses read-only Arrow buffers)."""
    if values.flags.c_contiguous and values.flags.writeable:
        return values
    return np.array(values, dtype=np.float64, order="C")


class NumericColumn:
    """A numeric column in one window: KLL quantile sketch plus exact count, min, max, sum, sum of squares.

    The sketch holds float64 items (``kll_doubles_sketch``), so large offsets and epoch timestamps
    keep their resolution; each batch goes in as one whole-array update.

    A column read with ``from_dict(..., lazy=True)`` keeps its checked sketch bytes and builds the
    sketch object on first use of :attr:`kll`: the service's ingest stores the envelope's own bytes
    and never reads its sketches, and holding 25,000 live sketch objects per poll batch cost it more
    than checking them (the heap grows and is faulted in again each batch).
    """

    kind = "numeric"
    __slots__ = ("_kll", "_kll_bytes", "count", "missing", "nan", "inf", "invalid", "absent", "min", "max", "sum",
                 "sumsq")

    def __init__(self, k: int = DEFAULT_KLL_K) -> None:
        self._kll: kll_doubles_sketch | None = kll_doubles_sketch(k)
        self._kll_bytes: bytes | None = None
        self.count = 0
        self.missing = 0
        self.nan = 0
        self.inf = 0
        self.invalid = 0
        self.absent = 0
        self.min = math.inf
        self.max = -math.inf
        self.sum = 0.0
        self.sumsq = 0.0

    @property
    def kll(self) -> kll_doubles_sketch:
        """The KLL sketch, built from the kept bytes on first use (then the bytes are dropped)."""
        sketch = self._kll
        if sketch is None:
            sketch = self._kll = kll_doubles_sketch.deserialize(self._kll_bytes)
            self._kll_bytes = None
        return sketch

    @kll.setter
    def kll(self, sketch: kll_doubles_sketch) -> None:
        self._kll = sketch
        self._kll_bytes = None

    @property
    def k(self) -> int:
        return int(self.kll.k)

    @property
    def rows(self) -> int:
        """Rows this column has seen in any state."""
        return self.count + self.missing + self.nan + self.inf + self.invalid + self.absent

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan

    @property
    def std(self) -> float:
        if self.count < 2:
            return math.nan
        var = (self.sumsq - self.sum * self.sum / self.count) / (self.count - 1)
        return math.sqrt(max(var, 0.0))

    def update_array(self, values: np.ndarray, missing: int = 0, invalid: int = 0) -> None:
        """Fold a float array in one vectorised call; NaN and +-inf are counted, not sketched."""
        self.missing += missing
        self.invalid += invalid
        if values.size == 0:
            return
        values = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(values)
        n_finite = int(np.count_nonzero(finite))
        if n_finite != values.size:
            nan = int(np.count_nonzero(np.isnan(values)))
            self.nan += nan
            self.inf += values.size - n_finite - nan
            values = values[finite]
        if n_finite == 0:
            return
        self.count += n_finite
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))
        self.sum += float(values.sum())
        self.sumsq += float(np.dot(values, values))
        self.kll.update(_writable(values))

    def update_summarised(self, values: np.ndarray, count: int, vmin: float, vmax: float, vsum: float,
                          vsumsq: float) -> None:
        """Fold finite float64 values whose exact moments the caller already reduced (the matrix fast path)."""
        if count == 0:
            return
        self.count += count
        self.min = min(self.min, vmin)
        self.max = max(self.max, vmax)
        self.sum += vsum
        self.sumsq += vsumsq
        self.kll.update(_writable(np.ascontiguousarray(values, dtype=np.float64)))

    def merge(self, other: NumericColumn) -> None:
        """Fold another numeric column into this one."""
        self.kll.merge(other.kll)
        self.count += other.count
        self.missing += other.missing
        self.nan += other.nan
        self.inf += other.inf
        self.invalid += other.invalid
        self.absent += other.absent
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.sum += other.sum
        self.sumsq += other.sumsq

    def copy(self) -> NumericColumn:
        return NumericColumn.from_dict(self.to_dict())

    def quantiles(self, ranks: np.ndarray | list[float]) -> np.ndarray:
        """Approximate quantiles at the given normalised ranks (NaN when empty)."""
        if self.kll.is_empty():
            return np.full(len(ranks), np.nan)
        return np.asarray(self.kll.get_quantiles(np.asarray(ranks, dtype=np.float64)), dtype=np.float64)

    def cdf(self, points: np.ndarray) -> np.ndarray:
        """Approximate CDF (fraction <= point) at sorted split points."""
        if self.kll.is_empty():
            return np.full(len(points), np.nan)
        pts = np.asarray(points, dtype=np.float64)
        return np.asarray(self.kll.get_cdf(pts, inclusive=True), dtype=np.float64)[:-1]

    def weighted_items(self) -> tuple[np.ndarray, np.ndarray]:
        """The sketch's retained items and their weights (the step CDF it stands for), unsorted."""
        return kll_weighted_items(bytes(self.kll.serialize()))

    def kll_levels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The sketch's retained items with run-length coded weights (:func:`kll_levels`), unsorted."""
        return kll_levels(bytes(self.kll.serialize()))

    @property
    def rank_error(self) -> float:
        """Normalised single-sided rank error bound (99% confidence) of the KLL sketch."""
        return float(self.kll.normalized_rank_error(False))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "numeric",
            "count": self.count,
            "missing": self.missing,
            "nan": self.nan,
            "inf": self.inf,
            "invalid": self.invalid,
            "absent": self.absent,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "sum": self.sum,
            "sumsq": self.sumsq,
            "kll": bytes(self.kll.serialize()),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], kll_items: str = KLL_DOUBLES, *, lazy: bool = False) -> NumericColumn:
        """Rebuild from the dict form; ``kll_items="floats"`` reads a wire format 1 sketch (widened).

        ``lazy``: the sketch bytes are still deserialized here (so bad bytes raise exactly as they
        always did), but the object is dropped at once and rebuilt from the bytes on first use.
        """
        col = cls.__new__(cls)
        raw, count, missing, nan, inf, invalid, absent, vmin, vmax, vsum, vsumsq = numeric_fields(d)  # one lookup
        raw = bytes(raw)
        if kll_items == KLL_FLOATS:
            raw = widen_kll_floats(raw)
        sketch = kll_doubles_sketch.deserialize(raw)
        if lazy:
            col._kll, col._kll_bytes = None, raw
        else:
            col._kll, col._kll_bytes = sketch, None
        col.count = int(count)
        col.missing = int(missing)
        col.nan = int(nan)
        col.inf = int(inf)
        col.invalid = int(invalid)
        col.absent = int(absent)
        col.min = math.inf if vmin is None else float(vmin)
        col.max = -math.inf if vmax is None else float(vmax)
        col.sum = float(vsum)
        col.sumsq = float(vsumsq)
        return col


numeric_fields = operator.itemgetter("kll", "count", "missing", "nan", "inf", "invalid", "absent", "min", "max",
                                     "sum", "sumsq")
"""A numeric column map's eleven values in one lookup (a missing one raises ``KeyError``)."""


_NUMERIC_LABEL = re.compile(r"[+-]?(?:(?:0|[1-9]\d*)(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


_INTEGER_LABEL = re.compile(r"[+-]?(?:0|[1-9]\d*)")


def canonical_label(label: str) -> str:
    """One label per category value: numeric-looking labels written the way Python writes the number.

    ``"1"``, ``"1.0"``, ``"+1"``, ``" 1 "`` and ``"1e0"`` are all ``"1"`` (a CSV code read as text in one
    batch and as a float in another is one category); ``"2.50"`` is ``"2.5"``. Integers are written
    in full (a 20-digit id stays exact), other numbers in Python's shortest round-trip form. Labels
    with leading zeros (``"007"``, zip codes) and anything else are kept verbatim.
    """
    text = label.strip()
    if not text or not _NUMERIC_LABEL.fullmatch(text):
        return label
    if _INTEGER_LABEL.fullmatch(text):
        return str(int(text))
    value = float(text)
    if not math.isfinite(value):
        return label
    return str(int(value)) if value.is_integer() else repr(value)


class CategoricalColumn:
    """A categorical column in one window: frequent-items sketch, HLL distinct count, exact counts."""

    kind = "categorical"
    __slots__ = ("fi", "hll", "ds", "count", "missing", "invalid", "absent", "lg_k")

    def __init__(self, lg_max_k: int = DEFAULT_FI_LG_MAX, hll_lg_k: int = DEFAULT_HLL_LG_K,
                 distinct_k: int = DEFAULT_DISTINCT_K) -> None:
        self.fi = frequent_strings_sketch(lg_max_k)
        self.hll = hll_sketch(hll_lg_k)
        # a bottom-k sample of distinct values with exact counts: finds values the reference never had
        self.ds: DistinctSample | None = DistinctSample(distinct_k)
        self.lg_k = hll_lg_k
        self.count = 0
        self.missing = 0
        self.invalid = 0
        self.absent = 0

    @property
    def rows(self) -> int:
        return self.count + self.missing + self.invalid + self.absent

    def update_counts(self, values: np.ndarray, counts: np.ndarray, missing: int = 0, invalid: int = 0) -> None:
        """Fold pre-aggregated (distinct value, count) pairs: one sketch call per distinct label.

        Labels are canonicalised first (:func:`canonical_label`), so ``"1"`` and ``"1.0"`` count as one.
        """
        self.missing += missing
        self.invalid += invalid
        merged: dict[str, int] = {}
        for v, c in zip(values.tolist(), counts.tolist(), strict=True):
            s = canonical_label(str(v))
            merged[s] = merged.get(s, 0) + int(c)
        fi_update = self.fi.update
        hll_update = self.hll.update
        for s, c in merged.items():
            fi_update(s, c)
            hll_update(s)
        if self.ds is not None and merged:
            self.ds.update_batch(np.array(list(merged)), np.fromiter(merged.values(), dtype=np.int64, count=len(merged)))
        self.count += int(counts.sum()) if counts.size else 0

    def update_array(self, values: np.ndarray, missing: int = 0, invalid: int = 0) -> None:
        """Fold an array of category labels (already stringified, no missing values)."""
        if values.size:
            uniq, counts = np.unique(values, return_counts=True)
        else:
            uniq, counts = values, np.zeros(0, dtype=np.int64)
        self.update_counts(uniq, counts, missing, invalid)

    def merge(self, other: CategoricalColumn) -> None:
        self.fi.merge(other.fi)
        u = hll_union(max(self.lg_k, other.lg_k))
        u.update(self.hll)
        u.update(other.hll)
        self.lg_k = max(self.lg_k, other.lg_k)
        self.hll = u.get_result()
        if self.ds is not None and other.ds is not None:
            self.ds.merge(other.ds)
        elif other.count or other.missing or other.invalid:
            self.ds = None  # one side kept no sample: the union's sample would be incomplete
        self.count += other.count
        self.missing += other.missing
        self.invalid += other.invalid
        self.absent += other.absent

    def copy(self) -> CategoricalColumn:
        return CategoricalColumn.from_dict(self.to_dict())

    @property
    def distinct(self) -> float:
        """Estimated number of distinct categories (HLL)."""
        return float(self.hll.get_estimate())

    @property
    def max_error(self) -> int:
        """Upper bound on the under-count of any single category's frequency (0 means exact)."""
        # The sketch under-counts every item by the same offset; an unseen item's upper bound is it.
        return int(self.fi.get_upper_bound("\x00driftline:unseen\x00"))

    def frequencies(self) -> dict[str, int]:
        """Guaranteed lower bound of the count per retained category (exact when ``max_error == 0``)."""
        items = self.fi.get_frequent_items(frequent_items_error_type.NO_FALSE_NEGATIVES, 0)
        return {item: int(lb) for item, _est, lb, ub in items}

    def frequency_bounds(self) -> dict[str, tuple[int, int]]:
        """(lower, upper) bounds of the count per retained category."""
        items = self.fi.get_frequent_items(frequent_items_error_type.NO_FALSE_NEGATIVES, 0)
        return {item: (int(lb), int(ub)) for item, _est, lb, ub in items}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "categorical",
            "count": self.count,
            "missing": self.missing,
            "invalid": self.invalid,
            "absent": self.absent,
            "fi": bytes(self.fi.serialize()),
            "hll": bytes(self.hll.serialize_compact()),
            **({"ds": self.ds.to_dict()} if self.ds is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CategoricalColumn:
        col = cls.__new__(cls)
        col.fi = frequent_strings_sketch.deserialize(bytes(d["fi"]))
        col.hll = hll_sketch.deserialize(bytes(d["hll"]))
        col.lg_k = int(col.hll.lg_config_k)
        col.ds = DistinctSample.from_dict(d["ds"]) if "ds" in d else None
        col.count = int(d["count"])
        col.missing = int(d["missing"])
        col.invalid = int(d["invalid"])
        col.absent = int(d["absent"])
        return col


Column = NumericColumn | CategoricalColumn


def column_from_dict(d: dict[str, Any], kll_items: str = KLL_DOUBLES, *, lazy: bool = False) -> Column:
    """Rebuild a column from its dict form (the wire format's column map); ``lazy`` as in
    :meth:`NumericColumn.from_dict` (categorical columns are always built)."""
    kind = d.get("kind")
    if kind == "numeric":
        return NumericColumn.from_dict(d, kll_items, lazy=lazy)
    if kind == "categorical":
        return CategoricalColumn.from_dict(d)
    raise ValueError(f"unknown column kind {kind!r}")
