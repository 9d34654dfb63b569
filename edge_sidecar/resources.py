"""The sidecar's own footprint (resident memory, CPU time), read from the OS when asked."""

from __future__ import annotations

import os
import resource

__all__ = ["cpu_seconds", "rss_bytes"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(proc: str = "/proc") -> int:
    """Current resident set size; the peak (``ru_maxrss``) where ``/proc`` is not available."""
    try:
        with open(f"{proc}/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def cpu_seconds() -> float:
    """User plus system CPU time of this process."""
    t = os.times()
    return float(t.user + t.system)
