"""The sidecar's own footprint (resident memory, CPU time, start time), read through client_python.

One source for both readers: the ``process_*`` series on ``/metrics`` (prometheus_client's
``ProcessCollector``) and the producer report each envelope carries to the service (``rss_bytes``,
``cpu_seconds``, ``started_at``). Where ``/proc`` is missing (macOS, some sandboxes) the collector yields
nothing and the values come from ``resource``/``os.times`` instead.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

from prometheus_client import ProcessCollector

__all__ = ["Footprint", "cpu_seconds", "footprint", "rss_bytes"]

_COLLECTOR = ProcessCollector(registry=None)
_FALLBACK_START = time.time()


@dataclass(frozen=True, slots=True)
class Footprint:
    """What this process uses right now; ``started_at`` tells the service when a device restarted."""

    rss_bytes: int
    cpu_seconds: float
    started_at: float


def footprint() -> Footprint:
    """Resident memory, CPU seconds and start time of this process (``/proc`` or the fallback)."""
    values: dict[str, float] = {}
    try:
        for fam in _COLLECTOR.collect():
            for s in fam.samples:
                values[s.name] = float(s.value)
    except Exception:  # noqa: BLE001 - a half-readable /proc is the same as none
        values = {}
    t = os.times()
    return Footprint(
        rss_bytes=int(values.get("process_resident_memory_bytes",
                                 resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)),
        cpu_seconds=values.get("process_cpu_seconds_total", float(t.user + t.system)),
        started_at=values.get("process_start_time_seconds", _FALLBACK_START),
    )


def rss_bytes() -> int:
    """Current resident set size (the peak where ``/proc`` is not available)."""
    return footprint().rss_bytes


def cpu_seconds() -> float:
    """User plus system CPU time of this process."""
    return footprint().cpu_seconds
