"""A coordinated sample of distinct values with exact counts: what the reference never saw.

A frequent-items sketch forgets every value lighter than its error, so past its capacity a column
whose values are *all* new (a vocabulary swapped for another, ids re-keyed) looks exactly like one
that did not change: both sides are one pooled ``other``. A :class:`DistinctSample` keeps the ``k``
distinct values with the smallest 64-bit hashes (a bottom-k sample, as in Gibbons' distinct
sampling), each with its **exact** count: a value enters the first time it is seen while its hash is
under the running threshold, the threshold only falls, so every value under the final threshold was
counted from its first row. Two samples merge exactly (sum the counts, keep what is under both
thresholds), and because the hash is the same everywhere, the reference's and the current window's
samples are coordinated: a sampled current value under both thresholds is new exactly when the
reference's sample does not hold it.

:func:`unseen_mass` turns two samples into the share of current rows on values the reference never
had, against what sampling alone would give: the Good-Turing estimate of the reference's missing
mass (its singletons' share). A column of ids unique per row has both near 1 and shows nothing; a
repeated vocabulary replaced by a new one has 1 against 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DEFAULT_DISTINCT_K", "DistinctSample", "UnseenMass", "unseen_mass"]

DEFAULT_DISTINCT_K = 256
_FULL = 1 << 64  # threshold while the sample still holds every distinct value it saw


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def hash_strings(values: np.ndarray) -> np.ndarray:
    """Stable 64-bit hashes of an array of labels, vectorised (the same in every process, unlike ``hash``).

    FNV-1a over the labels' code points (numpy's fixed-width strings pad with NULs, which are
    skipped), then the splitmix64 finaliser so that every bit is uniform, as bottom-k sampling needs.
    """
    arr = np.ascontiguousarray(np.asarray(values, dtype=np.str_))
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    width = max(arr.dtype.itemsize // 4, 1)
    points = arr.reshape(-1).view(np.uint32).reshape(-1, width).astype(np.uint64)
    h = np.full(points.shape[0], _FNV_OFFSET, dtype=np.uint64)
    for j in range(width):
        c = points[:, j]
        h = np.where(c != 0, (h ^ c) * _FNV_PRIME, h)
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def value_hash(value: str) -> int:
    """The hash of one label (:func:`hash_strings` of a one-element array)."""
    return int(hash_strings(np.array([value]))[0])


class DistinctSample:
    """The ``k`` distinct values with the smallest hashes, each with its exact count (see the module)."""

    __slots__ = ("k", "threshold", "_items")

    def __init__(self, k: int = DEFAULT_DISTINCT_K) -> None:
        if k < 1:
            raise ValueError("k must be >= 1")
        self.k = k
        self.threshold = _FULL
        self._items: dict[str, list[int]] = {}  # value -> [hash, count]

    @property
    def exact(self) -> bool:
        """True while the sample holds every distinct value it has seen."""
        return self.threshold == _FULL

    @property
    def sampling_rate(self) -> float:
        """Probability that any one distinct value is in the sample (1 while exact)."""
        return self.threshold / _FULL

    def items(self) -> dict[str, int]:
        """Sampled values and their exact counts."""
        return {v: hc[1] for v, hc in self._items.items()}

    def update_batch(self, values: np.ndarray, counts: np.ndarray) -> None:
        """Fold distinct labels with their counts (each label at most once per call), vectorised.

        Only labels under the threshold can enter, and of those only the ``k`` smallest hashes of
        this batch can survive it, so the Python work per call is bounded by ``k``.
        """
        if len(values) == 0:
            return
        h = hash_strings(values)
        cand = np.nonzero(h < np.uint64(self.threshold))[0] if not self.exact else np.arange(h.size)
        if cand.size > self.k:
            order = np.argpartition(h[cand], self.k)
            cut = int(h[cand[order[self.k]]])  # k labels of this batch alone hash below it
            cand = cand[order[: self.k]]
            if cut < self.threshold:
                self.threshold = cut
                self._items = {v: hc for v, hc in self._items.items() if hc[0] < cut}
        items = self._items
        vals = np.asarray(values)[cand].tolist()
        for v, hv, c in zip(vals, h[cand].tolist(), np.asarray(counts)[cand].tolist(), strict=True):
            v = str(v)
            entry = items.get(v)
            if entry is not None:
                entry[1] += int(c)
            else:
                items[v] = [hv, int(c)]
        if len(items) > self.k:
            self._evict()

    def _evict(self) -> None:
        """Drop the largest hashes until ``k`` remain; the threshold becomes the smallest dropped hash."""
        ordered = sorted(self._items.items(), key=lambda kv: kv[1][0])
        keep, drop = ordered[: self.k], ordered[self.k :]
        self.threshold = min(self.threshold, drop[0][1][0])
        self._items = dict(keep)

    def merge(self, other: DistinctSample) -> None:
        """Exact union: counts add; only values under both thresholds survive (their counts are complete)."""
        threshold = min(self.threshold, other.threshold)
        merged: dict[str, list[int]] = {v: list(hc) for v, hc in self._items.items() if hc[0] < threshold}
        for v, (h, c) in other._items.items():
            if h >= threshold:
                continue
            if v in merged:
                merged[v][1] += c
            else:
                merged[v] = [h, c]
        self.k = max(self.k, other.k)
        self.threshold = threshold
        self._items = merged
        if len(self._items) > self.k:
            self._evict()

    def to_dict(self) -> dict[str, Any]:
        # 0 stands for "every value seen" (2**64 does not fit a msgpack integer; no hash is below 0)
        return {"k": self.k, "threshold": 0 if self.exact else self.threshold,
                "items": [[v, hc[1]] for v, hc in self._items.items()]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DistinctSample:
        s = cls(int(d["k"]))
        s.threshold = int(d["threshold"]) or _FULL
        if not 0 < s.threshold <= _FULL:
            raise ValueError("distinct sample threshold out of range")
        labels = [str(v) for v, _ in d["items"]]
        for v, h, (_, c) in zip(labels, hash_strings(np.array(labels, dtype=np.str_)).tolist(), d["items"], strict=True):
            if h < s.threshold and int(c) > 0:
                s._items[v] = [h, int(c)]
        if len(s._items) > s.k:
            raise ValueError("distinct sample holds more than k values")
        return s


@dataclass(frozen=True, slots=True)
class UnseenMass:
    """Share of current rows on values the reference never had, and what sampling alone explains.

    ``current`` is the Horvitz-Thompson estimate of that share from the coordinated samples,
    ``expected`` the Good-Turing estimate of the reference's missing mass (the share a new sample of
    the *same* distribution puts on unseen values), ``se`` the standard error of their difference
    and ``excess = max(current - expected - 3 se, 0)``: the share of rows that provably moved to new
    values, at about 99.9% confidence. ``sampled`` is how many current values the estimate rests on.
    """

    current: float
    expected: float
    se: float
    excess: float
    sampled: int


def unseen_mass(ref: DistinctSample, cur: DistinctSample, n_ref: int, n_cur: int) -> UnseenMass:
    """Compare two coordinated samples (both must come from columns of ``n_ref`` and ``n_cur`` rows)."""
    if n_ref <= 0 or n_cur <= 0:
        return UnseenMass(0.0, 0.0, 0.0, 0.0, 0)
    threshold = min(ref.threshold, cur.threshold)
    p = threshold / _FULL
    ref_items = ref._items
    new_counts = [hc[1] for v, hc in cur._items.items() if hc[0] < threshold and v not in ref_items]
    sampled = sum(1 for hc in cur._items.values() if hc[0] < threshold)
    # Horvitz-Thompson: each distinct value is in the sample with probability p
    current = sum(new_counts) / p / n_cur
    var_cur = (1 - p) / (p * p) * sum(c * c for c in new_counts) / (n_cur * n_cur)
    p_ref = ref.sampling_rate
    singletons = sum(1 for hc in ref_items.values() if hc[1] == 1)
    expected = singletons / p_ref / n_ref
    var_ref = (1 - p_ref) / (p_ref * p_ref) * singletons / (n_ref * n_ref)
    current, expected = min(current, 1.0), min(expected, 1.0)
    se = math.sqrt(var_cur + var_ref)
    excess = max(current - expected - 3.0 * se, 0.0)
    return UnseenMass(current, expected, se, excess, sampled)
