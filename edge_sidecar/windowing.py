"""Tumbling windows per stream, closed on time and on size, by event time with bounded lateness.

Pure: no clock, no threads. The caller passes ``now`` (processing time, epoch seconds) to every
call, so tests drive time by hand and the replay command drives it with the data's own clock.

Rules, with window length ``W`` and lateness allowance ``L``:

* A row with event time ``t`` belongs to the window ``[floor(t/W)*W, +W)`` of its stream.
* That window stays open until ``now >= end + L``; :meth:`Windower.tick` then closes it (``time``).
* A row whose window would already be closed by that rule is *late*: it goes into the window of
  ``now`` instead and is counted in ``late_rows`` (so its count is never lost).
* A row stamped more than ``L`` in the future (a device with a wrong clock), or with no usable time,
  is also placed by ``now`` and counted (``early_rows``, ``invalid_time_rows``).
* A window that reaches ``max_rows`` closes at once (``size``); the next row of that stream and
  time opens a fresh window with the same bounds (the service merges both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftline.profile import ProfileConfig, StreamKey, WindowProfile

from .errors import ObserveError

__all__ = ["ClosedWindow", "Windower"]


@dataclass(slots=True)
class ClosedWindow:
    """A window that will not change again, and why it closed (``time``, ``size`` or ``shutdown``)."""

    profile: WindowProfile
    reason: str


class Windower:
    """Open windows keyed by (stream, window start); see the module docstring for the rules."""

    def __init__(
        self,
        seconds: float = 60.0,
        *,
        max_rows: int = 1_000_000,
        lateness: float = 10.0,
        config: ProfileConfig | None = None,
        max_open: int = 10_000,
    ) -> None:
        if not seconds > 0:
            raise ValueError("window seconds must be > 0")
        if lateness < 0 or max_rows < 1 or max_open < 1:
            raise ValueError("lateness must be >= 0, max_rows and max_open >= 1")
        self.seconds = float(seconds)
        self.max_rows = int(max_rows)
        self.lateness = float(lateness)
        self.config = config or ProfileConfig()
        self.max_open = int(max_open)
        self._open: dict[tuple[StreamKey, float], WindowProfile] = {}
        self.late_rows = 0
        self.early_rows = 0
        self.invalid_time_rows = 0

    # ---- placing rows ------------------------------------------------------------------------
    def bucket(self, t: float) -> float:
        """Start of the window that contains time ``t``."""
        return math.floor(t / self.seconds) * self.seconds

    def assign(self, event_time: float | None, now: float, count: int = 1) -> float:
        """Window start for ``count`` rows stamped ``event_time`` (None means "now")."""
        if event_time is None:
            return self.bucket(now)
        t = float(event_time)
        if not math.isfinite(t):
            self.invalid_time_rows += count
            return self.bucket(now)
        if t > now + self.lateness:
            self.early_rows += count
            return self.bucket(now)
        start = self.bucket(t)
        if start + self.seconds + self.lateness <= now:
            self.late_rows += count
            return self.bucket(now)
        return start

    def assign_many(self, times: np.ndarray | Sequence[float], now: float | np.ndarray) -> np.ndarray:
        """Window starts for an array of event times (NaN means "no usable time").

        ``now`` may be one processing time or one per row (a replay advancing its clock row by row).
        """
        t = np.asarray(times, dtype=np.float64)
        current = np.floor(np.asarray(now, dtype=np.float64) / self.seconds) * self.seconds
        starts = np.floor(t / self.seconds) * self.seconds
        invalid = ~np.isfinite(t)
        early = ~invalid & (t > now + self.lateness)
        late = ~invalid & ~early & (starts + self.seconds + self.lateness <= now)
        self.invalid_time_rows += int(np.count_nonzero(invalid))
        self.early_rows += int(np.count_nonzero(early))
        self.late_rows += int(np.count_nonzero(late))
        moved = invalid | early | late
        starts[moved] = current[moved] if current.ndim else current
        return starts

    # ---- folding -----------------------------------------------------------------------------
    def window(self, key: StreamKey, start: float) -> WindowProfile:
        """The open window of ``key`` starting at ``start``, opened if needed."""
        w = self._open.get((key, start))
        if w is None:
            if len(self._open) >= self.max_open:
                raise ObserveError(f"too many open windows ({self.max_open}); rows dropped", "oversized")
            w = WindowProfile(key, start, start + self.seconds, self.config)
            self._open[(key, start)] = w
        return w

    def fold(
        self,
        key: StreamKey,
        start: float,
        features: Any,
        outputs: Any = None,
        *,
        rows_observed: int | None = None,
        latency_ms: Any = None,
        errors: int = 0,
        feature_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
    ) -> list[ClosedWindow]:
        """Fold a batch into one window; returns the window if that made it reach ``max_rows``."""
        w = self.window(key, start)
        w.update(
            features,
            outputs,
            feature_names=feature_names,
            output_names=output_names,
            latency_ms=latency_ms,
            errors=errors,
            rows_observed=rows_observed,
        )
        if w.rows >= self.max_rows:
            del self._open[(key, start)]
            return [ClosedWindow(w, "size")]
        return []

    # ---- closing -----------------------------------------------------------------------------
    def tick(self, now: float) -> list[ClosedWindow]:
        """Close every window whose end plus the lateness allowance has passed."""
        due = [k for k, w in self._open.items() if w.end + self.lateness <= now]
        return [ClosedWindow(self._open.pop(k), "time") for k in sorted(due, key=lambda k: k[1])]

    def flush(self, reason: str = "shutdown") -> list[ClosedWindow]:
        """Close every open window (shutdown, end of a replay)."""
        out = [ClosedWindow(w, reason) for _, w in sorted(self._open.items(), key=lambda kv: kv[0][1])]
        self._open.clear()
        return out

    @property
    def open_windows(self) -> int:
        return len(self._open)

    @property
    def open_rows(self) -> int:
        return sum(w.rows for w in self._open.values())

    def open_profiles(self) -> list[WindowProfile]:
        """The open windows themselves (read-only use: tests, health)."""
        return list(self._open.values())
