"""Rate-limited warnings: a flood of bad input must not become a flood of log lines on a small device."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["RateLimitFilter", "RateLimitedLog"]


class RateLimitedLog:
    """At most one line per ``key`` every ``interval`` seconds; the next line says how many were skipped."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._skipped[key] = self._skipped.get(key, 0) + 1
                return
            self._last[key] = now
            skipped = self._skipped.pop(key, 0)
        if skipped:
            msg = f"{msg} ({skipped} similar messages suppressed)"
        self.logger.log(level, msg, *args)

    def warning(self, key: str, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: Any) -> None:
        self.log(logging.ERROR, key, msg, *args)


class RateLimitFilter(logging.Filter):
    """A logging filter for chatty libraries (kafka-python logs every reconnect while a broker is down).

    Passes at most one record per (logger, level, message template) every ``interval`` seconds.
    """

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[tuple[str, int, str], float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                return False
            if len(self._last) > 1000:
                self._last.clear()
            self._last[key] = now
            return True
