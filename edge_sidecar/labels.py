"""Delayed labels on the device: predictions remembered by id, labels joined, summaries shipped.

A :class:`LabelTracker` wraps the core's :class:`~driftline.labeljoin.LabelJoiner` for one
:class:`~driftline.edge_sidecar.monitor.Monitor`: every observed row that carries a ``request_id``
(the SDK's argument, ``request_id`` on ``POST /v1/observe``, the OIP request's ``id`` through the
proxy) is remembered with its stream, its window and its score (the output named ``label_output``);
``Monitor.label(id, y)`` and ``POST /v1/labels`` join a label to it. Joined labels leave as a
zero-row :class:`~driftline.profile.WindowProfile` of the *prediction's* window carrying only the
``performance`` key, through the same spool and shipper as any window; the service stores it next to
that window's rows and merges it exactly once by envelope id.

Bounded: ``label_max_pending`` predictions, ``label_horizon_seconds`` of waiting (both counted).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from driftline.errors import LabelError
from driftline.labeljoin import LabelJoiner
from driftline.profile import StreamKey, WindowProfile

__all__ = ["LabelTracker"]


class LabelTracker:
    """Pending predictions and joined labels of one monitor; thread-safe (its own lock)."""

    def __init__(self, *, window_seconds: float, lateness_seconds: float, output: str = "prediction",
                 task: str = "binary", threshold: float = 0.5, horizon_seconds: float = 3600.0,
                 max_pending: int = 100_000, flush_seconds: float = 10.0) -> None:
        self.window_seconds = float(window_seconds)
        self.lateness = float(lateness_seconds)
        self.output = output
        self.flush_seconds = float(flush_seconds)
        self.joiner = LabelJoiner(horizon_seconds, max_pending, task=task, threshold=threshold)
        self.rejected: dict[str, int] = {}
        self.no_score = 0
        self._lock = threading.Lock()
        self._last_take = -math.inf

    def count_rejected(self, reason: str, n: int = 1) -> None:
        """Count labels (or predictions) refused under ``reason``."""
        self.rejected[reason] = self.rejected.get(reason, 0) + n

    def score_of(self, outputs: Any) -> float | None:
        """The score of one row's outputs: a number, ``outputs[label_output]``, or a one-value array."""
        if isinstance(outputs, Mapping):
            outputs = outputs.get(self.output)
        if isinstance(outputs, np.ndarray | list | tuple):
            outputs = outputs[0] if len(outputs) == 1 else None
        if isinstance(outputs, bool | np.bool_) or not isinstance(outputs, int | float | np.number):
            return None
        return float(outputs)

    def record_row(self, request_id: Any, key: StreamKey, start: float, outputs: Any, now: float) -> None:
        """Remember one row's prediction, in the window the fold put it in (``start``); a row without a
        usable score is counted ``no_score``."""
        score = self.score_of(outputs)
        with self._lock:
            if score is None:
                self.no_score += 1
                return
            try:
                self.joiner.add(request_id, key, start, score, now)
            except LabelError as exc:
                self.count_rejected(exc.reason)

    def record_batch(self, request_ids: Any, key: StreamKey, groups: list[tuple[float, Any]],
                     outputs: Mapping[str, np.ndarray], now: float) -> None:
        """Remember a batch's predictions, window by window (``groups`` as the monitor placed them)."""
        scores = outputs.get(self.output)
        ids = list(request_ids) if not isinstance(request_ids, str | int) else [request_ids]
        with self._lock:
            if scores is None or len(ids) != len(scores):
                self.no_score += len(ids)
                return
            s = np.asarray(scores, dtype=np.float64)
            for start, idx in groups:
                sel = range(len(ids)) if idx is None else idx.tolist()
                try:
                    self.joiner.add_many([ids[i] for i in sel], key, start, s[list(sel)], now)
                except (LabelError, TypeError, ValueError) as exc:
                    self.count_rejected(getattr(exc, "reason", "wrong_type"), len(sel))

    def label_many(self, ids: list[Any], labels: list[Any], now: float) -> int:
        """Join labels; raises :class:`LabelError` (counted) for a batch that cannot be used."""
        with self._lock:
            try:
                return self.joiner.label_many(ids, labels, now)
            except LabelError as exc:
                self.count_rejected(exc.reason, len(ids))
                raise

    def label(self, prediction_id: Any, y: Any, now: float) -> bool:
        """Join one label (the joiner's scalar path); raises :class:`LabelError` (counted)."""
        with self._lock:
            try:
                return self.joiner.label(prediction_id, y, now)
            except LabelError as exc:
                self.count_rejected(exc.reason)
                raise

    def take(self, now: float, force: bool = False) -> list[WindowProfile]:
        """Zero-row profiles carrying the summaries joined since the last take (every ``flush_seconds``)."""
        with self._lock:
            if not force and now - self._last_take < self.flush_seconds:
                return []
            self._last_take = now
            self.joiner.expire(now)
            out = []
            for key, start, summary in self.joiner.take():
                p = WindowProfile(key, start, start + self.window_seconds)
                p.performance = summary
                out.append(p)
            return out

    def snapshot(self) -> dict[str, Any]:
        """Counters for health and metrics."""
        with self._lock:
            return {**self.joiner.counts, "pending": self.joiner.pending, "no_score": self.no_score,
                    "rejected_labels": dict(self.rejected)}
