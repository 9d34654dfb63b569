"""A child server process with its output in a log file, and bounded stop/kill."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ManagedProcess", "log_tail", "pid_alive", "terminate_pid"]


_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the parent dies (a killed pytest leaks nothing)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def log_tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        data = path.read_bytes()[-64_000:]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def terminate_pid(pid: int, timeout: float, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig`` to a process we do not own as a child, wait up to ``timeout``, then SIGKILL.

    Returns True when the process ended on ``sig`` alone.
    """
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return False


class ManagedProcess:
    """One server process started in its own session, its stdout and stderr appended to ``log_path``.

    ``stop`` sends ``stop_signal``, waits up to ``timeout`` seconds and then SIGKILLs the process
    group, so a stop can never hang. Unless ``detach=True``, the kernel kills the process when the
    thread that started it dies, so even a SIGKILLed test run leaves no server behind; the
    command-line entry points for local use detach.
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
        detach: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.user = user
        self.stop_signal = stop_signal
        self.detach = detach
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def start(self) -> None:
        """Start the process (it must not be running)."""
        if self.running:
            raise RuntimeError(f"already running: pid {self.pid}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                user=self.user,
                group=self.user,
                start_new_session=True,
                preexec_fn=None if self.detach else _die_with_parent,
            )

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def stop(self, timeout: float = 30.0) -> bool:
        """Ask the process to stop; SIGKILL after ``timeout``. True when it stopped gracefully."""
        if self._popen is None or self._popen.poll() is not None:
            return True
        try:
            os.kill(self._popen.pid, self.stop_signal)
        except ProcessLookupError:
            pass
        try:
            self._popen.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            self.kill()
            return False

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, as far as the server can tell)."""
        if self._popen is None or self._popen.poll() is not None:
            return
        try:
            os.killpg(self._popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self._popen.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - the kernel reaps SIGKILLed processes
            pass

    def tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)
