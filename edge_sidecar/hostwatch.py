"""The host process's footprint: resident memory and CPU time of the model server the sidecar sits next to.

The sidecar's own footprint (:mod:`.resources`) says nothing about a leak in the process that serves
the model. With ``watch_pid`` (or ``watch_pid_file``, re-read every sample so a restarted host with a
new pid is followed) each producer map also carries ``host_pid``, ``host_rss_bytes``,
``host_cpu_seconds`` and ``host_started_at`` read from ``/proc/<pid>``; the service fits their trend
(``service/device_health.py``). A pid that vanished, a pid file that is missing or garbage, or a
system without ``/proc`` is a counted signal (``host_read_failures`` in the map,
``driftline_sidecar_host_read_failures`` on ``/metrics``), never an exception in the shipper.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HostFootprint", "HostWatch", "read_proc"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_MAX_PID_FILE = 64  # a pid file is a number and a newline


@dataclass(frozen=True, slots=True)
class HostFootprint:
    """One reading of the host process: its pid, resident bytes, CPU seconds and start time (epoch)."""

    pid: int
    rss_bytes: int
    cpu_seconds: float
    started_at: float


def _boot_time(proc: Path) -> float:
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise ValueError("no btime in /proc/stat")


def read_proc(pid: int, proc: Path = Path("/proc")) -> HostFootprint:
    """Read ``/proc/<pid>/stat``; raises OSError/ValueError when the pid is gone or the file is odd."""
    raw = (proc / str(pid) / "stat").read_text()
    # the command name is in parentheses and may itself hold spaces or ')': split at the last one
    fields = raw[raw.rindex(")") + 2:].split()
    utime, stime, start_ticks, rss_pages = int(fields[11]), int(fields[12]), int(fields[19]), int(fields[21])
    return HostFootprint(pid, rss_pages * _PAGE, (utime + stime) / _TICKS, _boot_time(proc) + start_ticks / _TICKS)


class HostWatch:
    """Reads the watched process on demand; counts what it could not read instead of raising."""

    def __init__(self, pid: int | None = None, pid_file: str | Path | None = None,
                 proc: str | Path = "/proc") -> None:
        self.pid = pid
        self.pid_file = Path(pid_file) if pid_file is not None else None
        self.proc = Path(proc)
        self.failures = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.pid is not None or self.pid_file is not None

    def _pid(self) -> int:
        if self.pid_file is not None:
            with open(self.pid_file, "rb") as fh:
                text = fh.read(_MAX_PID_FILE + 1)
            if len(text) > _MAX_PID_FILE:
                raise ValueError(f"{self.pid_file} is not a pid file (over {_MAX_PID_FILE} bytes)")
            pid = int(text.strip())
        else:
            assert self.pid is not None
            pid = self.pid
        if pid <= 0:
            raise ValueError(f"pid {pid} is not a process id")
        return pid

    def read(self) -> HostFootprint | None:
        """The host's footprint now, or None (and one more failure counted) when it cannot be read."""
        if not self.enabled:
            return None
        try:
            return read_proc(self._pid(), self.proc)
        except (OSError, ValueError, IndexError) as exc:
            with self._lock:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:200]
            return None

    def producer_keys(self) -> dict[str, str]:
        """The host keys of the producer map (empty when not watching): a reading, and the failure count."""
        if not self.enabled:
            return {}
        fp = self.read()
        out = {"host_read_failures": str(self.failures)}
        if fp is not None:
            out.update(host_pid=str(fp.pid), host_rss_bytes=str(fp.rss_bytes),
                       host_cpu_seconds=f"{fp.cpu_seconds:.3f}", host_started_at=f"{fp.started_at:.2f}")
        return out
