"""A tiny stderr progress bar: long file work shows progress, pipes and CI logs stay quiet.

No dependency (an edge device has no rich/tqdm); redraws at most ten times a second; drawn only
when stderr is a terminal unless ``force=True``.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


def _human(n: float, unit: str) -> str:
    if unit == "B":
        for u in ("B", "KiB", "MiB", "GiB"):
            if n < 1024 or u == "GiB":
                return f"{n:.0f} {u}" if u == "B" else f"{n:.1f} {u}"
            n /= 1024
    return f"{n:,.0f} {unit}"


class ProgressBar:
    """``with ProgressBar(total, "reading", unit="B") as bar: bar.update_to(done)``."""

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "rows",
        stream: TextIO | None = None,
        force: bool = False,
        width: int = 30,
    ) -> None:
        self.total = max(int(total), 0)
        self.desc = desc
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = force or bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.done = 0
        self._last_draw = 0.0
        self._start = time.monotonic()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update_to(self, done: int) -> None:
        self.done = int(done)
        now = time.monotonic()
        if self.enabled and now - self._last_draw >= 0.1:
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(self.done / self.total, 1.0) if self.total else 0.0
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        rate = self.done / max(now - self._start, 1e-9)
        line = (
            f"\r{self.desc} [{bar}] {frac * 100:5.1f}% "
            f"{_human(self.done, self.unit)}/{_human(self.total, self.unit)} ({_human(rate, self.unit)}/s)"
        )
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
