"""Joining delayed labels with the predictions they are about, within a bounded horizon and memory.

Pure: no clock (callers pass ``now``), no I/O. A prediction is remembered by its id with its stream,
its window and its score; a label naming that id later folds (score, label) into the
:class:`~driftline.performance.PerformanceSummary` of the prediction's own window, so performance is
reported for the window the prediction belonged to, however late its label came.

Bounds, both counted (never silent):

* time: a prediction older than ``horizon_seconds`` is forgotten (``expired``); its label, if it
  comes, is counted ``unknown``;
* memory: the pending predictions live in fixed ring arrays of ``max_pending`` slots plus one dict
  entry each, so memory is ``O(max_pending)`` whatever the traffic; when the ring is full the oldest
  is forgotten (``evicted``).

An id predicted twice keeps its newest prediction (``replaced``); a label for an id already joined is
``unknown`` (the first label wins). :meth:`LabelJoiner.label_many` joins a batch with one dict pop
per label and numpy for the rest (``bench/bench_label_join.py``).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from itertools import repeat
from typing import Any

import numpy as np

from .errors import LabelError
from .performance import BINARY, DEFAULT_BINS, DEFAULT_SCORE_K, REGRESSION, PerformanceSummary

__all__ = ["LabelJoiner", "MAX_ID_CHARS"]

MAX_ID_CHARS = 256
"""Longest prediction id kept (longer ids are refused: they would make memory depend on the client)."""


def _norm_id(i: Any) -> str:
    if type(i) is str:
        if len(i) > MAX_ID_CHARS or not i:
            raise LabelError(f"a prediction id must be 1 to {MAX_ID_CHARS} characters", "bad_id")
        return i
    if type(i) is int:
        return str(i)
    raise LabelError(f"a prediction id must be a string or an integer, not {type(i).__name__}", "bad_id")


class LabelJoiner:
    """Pending predictions by id, and the performance summaries of the labels joined so far.

    Parameters
    ----------
    horizon_seconds
        How long a prediction waits for its label.
    max_pending
        Ring capacity: at most this many predictions are remembered (the newest).
    task, threshold, bins, k
        The :class:`~driftline.performance.PerformanceSummary` each window's labels fold into.
    """

    def __init__(self, horizon_seconds: float = 3600.0, max_pending: int = 100_000, *, task: str = BINARY,
                 threshold: float = 0.5, bins: int = DEFAULT_BINS, k: int = DEFAULT_SCORE_K) -> None:
        if not horizon_seconds > 0 or max_pending < 1:
            raise LabelError("horizon_seconds must be > 0 and max_pending >= 1", "config")
        PerformanceSummary(task, threshold, bins, k)  # refuses a bad task, threshold, bins or k now
        self.horizon_seconds = float(horizon_seconds)
        self.max_pending = int(max_pending)
        self.task, self.threshold, self.bins, self.k = task, float(threshold), int(bins), int(k)
        self._reset()

    def _reset(self) -> None:
        cap = self.max_pending
        self._ids = np.empty(cap, dtype=object)
        self._score = np.zeros(cap, dtype=np.float64)
        self._group = np.zeros(cap, dtype=np.int32)
        self._time = np.zeros(cap, dtype=np.float64)
        self._head = 0  # oldest slot
        self._size = 0  # slots in use (joined ones become holes until the head passes them)
        self._slot: dict[str, int] = {}
        self._groups: dict[tuple[Hashable, float], int] = {}
        self._group_keys: list[tuple[Hashable, float]] = []
        self._joined: dict[int, PerformanceSummary] = {}
        self._buffer: dict[int, tuple[list[float], list[float]]] = {}  # joined one at a time, not yet folded
        self._buffered = 0
        self.counts = {"predictions": 0, "joined": 0, "unknown": 0, "expired": 0, "evicted": 0, "replaced": 0,
                       "rejected": 0}

    # ---- predictions ---------------------------------------------------------------------------
    def _group_of(self, key: Hashable, window_start: float) -> int:
        g = self._groups.get((key, window_start))
        if g is None:
            g = self._groups[(key, window_start)] = len(self._group_keys)
            self._group_keys.append((key, window_start))
        return g

    def _check_scores(self, s: np.ndarray) -> None:
        if not np.all(np.isfinite(s)):
            raise LabelError("prediction scores must be finite numbers", "wrong_type")
        if self.task == BINARY and not np.all((s >= 0.0) & (s <= 1.0)):
            raise LabelError("a binary model's scores must be in [0, 1]", "wrong_type")

    def add(self, prediction_id: Any, key: Hashable, window_start: float, score: float, now: float) -> None:
        """Remember one prediction (its stream ``key``, its window and its score or output)."""
        self.add_many([prediction_id], key, window_start, [score], now)

    def add_many(self, ids: Sequence[Any], key: Hashable, window_start: float, scores: Any, now: float) -> None:
        """Remember a batch of predictions of one stream and window; raises :class:`LabelError` (none kept)."""
        s = np.atleast_1d(np.asarray(scores, dtype=np.float64))
        names = [_norm_id(i) for i in ids]
        if s.shape != (len(names),):
            raise LabelError(f"{len(names)} prediction ids but {s.size} scores", "malformed")
        self._check_scores(s)
        self.expire(now)
        g = self._group_of(key, float(window_start))
        cap, slot_of = self.max_pending, self._slot
        for name, score in zip(names, s.tolist(), strict=True):
            if self._size == cap:
                self._drop_head("evicted")
            old = slot_of.get(name)
            if old is not None:
                self._ids[old] = None
                self.counts["replaced"] += 1
            slot = (self._head + self._size) % cap
            self._size += 1
            self._ids[slot] = name
            self._score[slot] = score
            self._group[slot] = g
            self._time[slot] = now
            slot_of[name] = slot
        self.counts["predictions"] += len(names)

    def _drop_head(self, reason: str) -> None:
        h = self._head
        name = self._ids[h]
        if name is not None:
            del self._slot[name]
            self._ids[h] = None
            self.counts[reason] += 1
        self._head = (h + 1) % self.max_pending
        self._size -= 1

    def expire(self, now: float) -> int:
        """Forget predictions older than the horizon; returns how many were still waiting."""
        before = self.counts["expired"]
        cutoff = now - self.horizon_seconds
        while self._size and self._time[self._head] < cutoff:
            self._drop_head("expired")
        return self.counts["expired"] - before

    # ---- labels --------------------------------------------------------------------------------
    def label(self, prediction_id: Any, label: Any, now: float) -> bool:
        """Join one label; True when its prediction was waiting (otherwise it is counted ``unknown``).

        The scalar path (the SDK's ``Monitor.label``): the pair is buffered per window and folded into
        its summary in bulk (at :meth:`take`, or every ``8192`` labels), so one label costs a dict pop.
        """
        try:
            name = _norm_id(prediction_id)
            if isinstance(label, bool):
                label = int(label)
            y = float(label)
            if not math.isfinite(y) or self.task == BINARY and y not in (0.0, 1.0):
                raise LabelError("a binary model's labels must be 0 or 1" if math.isfinite(y)
                                 else "labels must be finite numbers", "wrong_type")
        except (TypeError, ValueError):
            self.counts["rejected"] += 1
            raise LabelError(f"a label must be a number, not {type(label).__name__}", "wrong_type") from None
        except LabelError:
            self.counts["rejected"] += 1
            raise
        if self._size and self._time[self._head] < now - self.horizon_seconds:
            self.expire(now)
        slot = self._slot.pop(name, -1)
        if slot < 0:
            self.counts["unknown"] += 1
            return False
        self._ids[slot] = None
        buf = self._buffer.get(int(self._group[slot]))
        if buf is None:
            buf = self._buffer[int(self._group[slot])] = ([], [])
        buf[0].append(float(self._score[slot]))
        buf[1].append(y)
        self._buffered += 1
        self.counts["joined"] += 1
        if self._buffered >= 8192:
            self._fold_buffer()
        return True

    def _summary(self, g: int) -> PerformanceSummary:
        summary = self._joined.get(g)
        if summary is None:
            summary = self._joined[g] = PerformanceSummary(self.task, self.threshold, self.bins, self.k)
        return summary

    def _fold_buffer(self) -> None:
        for g, (scores, ys) in self._buffer.items():
            self._summary(g).update(scores, ys)
        self._buffer = {}
        self._buffered = 0

    def label_many(self, ids: Sequence[Any], labels: Any, now: float) -> int:
        """Join a batch of labels; returns how many found their prediction.

        A batch with a label that cannot be used (not 0/1 for a binary model, not a finite number, an
        id of the wrong type) raises :class:`LabelError` and joins nothing, counted ``rejected``.
        """
        try:
            y = np.atleast_1d(np.asarray(labels, dtype=np.float64))
            if y.shape != (len(ids),):
                raise LabelError(f"{len(ids)} prediction ids but {y.size} labels", "malformed")
            if not np.all(np.isfinite(y)):
                raise LabelError("labels must be finite numbers", "wrong_type")
            if self.task == BINARY and not np.all((y == 0.0) | (y == 1.0)):
                raise LabelError("a binary model's labels must be 0 or 1", "wrong_type")
            names = ids if all(type(i) is str and 0 < len(i) <= MAX_ID_CHARS for i in ids) else [
                _norm_id(i) for i in ids]
        except (TypeError, ValueError) as exc:
            self.counts["rejected"] += len(ids)
            raise LabelError(f"labels must be numbers: {exc}", "wrong_type") from None
        except LabelError:
            self.counts["rejected"] += len(ids)
            raise
        self.expire(now)
        slots = np.array(list(map(self._slot.pop, names, repeat(-1, len(names)))), dtype=np.int64)
        found = slots >= 0
        hit = slots[found]
        joined = int(hit.size)
        self.counts["unknown"] += len(names) - joined
        if not joined:
            return 0
        self._ids[hit] = None
        scores, groups, ys = self._score[hit], self._group[hit], y[found]
        order = np.argsort(groups, kind="stable")
        groups, scores, ys = groups[order], scores[order], ys[order]
        cuts = np.flatnonzero(np.diff(groups)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, groups.size], strict=True):
            self._summary(int(groups[lo])).update(scores[lo:hi], ys[lo:hi])
        self.counts["joined"] += joined
        return joined

    # ---- handing summaries on --------------------------------------------------------------------
    def take(self) -> list[tuple[Any, float, PerformanceSummary]]:
        """The summaries joined since the last take, as ``(key, window_start, summary)``, oldest first.

        Also drops the stream/window table entries no pending prediction refers to any more, so the
        table stays bounded by the ring.
        """
        self._fold_buffer()
        out = [(*self._group_keys[g], s) for g, s in self._joined.items()]
        self._joined = {}
        self._compact()
        return sorted(out, key=lambda t: t[1])

    def _compact(self) -> None:
        if len(self._group_keys) <= 64:
            return
        live = self._live_slots()
        used = np.unique(self._group[live])
        remap = {int(old): new for new, old in enumerate(used.tolist())}
        keys = [self._group_keys[old] for old in used.tolist()]
        if live.size:
            self._group[live] = np.fromiter((remap[int(g)] for g in self._group[live]), dtype=np.int32,
                                            count=live.size)
        self._group_keys = keys
        self._groups = {k: i for i, k in enumerate(keys)}

    def _live_slots(self) -> np.ndarray:
        return np.fromiter(self._slot.values(), dtype=np.int64, count=len(self._slot))

    @property
    def pending(self) -> int:
        """Predictions waiting for their label."""
        return len(self._slot)

    @property
    def regression(self) -> bool:
        return self.task == REGRESSION
