"""Prometheus and Alertmanager from the Debian packages, run on loopback with a given config file.

Debian names the Alertmanager binary ``prometheus-alertmanager``; upstream tarballs name it
``alertmanager``. Both are looked up on PATH and in /usr/bin.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.errors import HarnessError, MissingDependencyError
from tests.harness.ports import free_port
from tests.harness.proc import ManagedProcess

__all__ = ["AlertmanagerServer", "PrometheusBinaries", "PrometheusServer", "find_prometheus_binaries",
           "http_get_json"]

_INSTALL = "apt-get install -y prometheus prometheus-alertmanager (scripts/test.sh does it)"


def _which(*names: str) -> Path | None:
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
        if found:
            return Path(found)
    return None


@dataclass(frozen=True)
class PrometheusBinaries:
    """Paths of the Prometheus tools the tests run."""

    prometheus: Path
    promtool: Path
    alertmanager: Path
    amtool: Path | None


def find_prometheus_binaries() -> PrometheusBinaries:
    """Locate prometheus, promtool and alertmanager; raise naming the install step when one is missing."""
    found = {"prometheus": _which("prometheus"), "promtool": _which("promtool"),
             "alertmanager": _which("prometheus-alertmanager", "alertmanager")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise MissingDependencyError(f"not installed: {', '.join(missing)}; install step: {_INSTALL}")
    return PrometheusBinaries(prometheus=found["prometheus"], promtool=found["promtool"],  # type: ignore[arg-type]
                              alertmanager=found["alertmanager"],  # type: ignore[arg-type]
                              amtool=_which("prometheus-alertmanager-amtool", "amtool"))


def http_get_json(url: str, timeout: float = 10.0) -> Any:
    """GET a JSON document (stdlib only, so the harness needs no HTTP client)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback URLs only
        return json.loads(resp.read())


class _LoopbackServer:
    """Shared start / readiness / stop for the two Go servers."""

    name = "server"

    def __init__(self, workdir: Path | str, config_path: Path | str, port: int | None,
                 start_timeout: float) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = Path(config_path)
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self.startup_seconds: float | None = None
        self._proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def start(self):
        """Start and wait until ``/-/ready`` answers 200; returns self."""
        if self._proc is not None and self._proc.running:
            return self
        started = time.monotonic()
        self._proc = ManagedProcess(self._argv(), self.workdir / f"{self.name}.log", cwd=self.workdir)
        self._proc.start()
        deadline = started + self.start_timeout
        while time.monotonic() < deadline:
            if not self._proc.running:
                raise HarnessError(f"{self.name} exited with code {self._proc.returncode} during start:\n"
                                   f"{self._proc.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:  # noqa: S310
                    if resp.status == 200:
                        self.startup_seconds = time.monotonic() - started
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self._proc.kill()
        raise HarnessError(f"{self.name} on {self.url} not ready after {self.start_timeout:.0f}s:\n"
                           f"{self._proc.tail()}")

    def reload(self) -> None:
        """Re-read the config file (``POST /-/reload``)."""
        req = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=10):  # noqa: S310
            pass

    def stop(self, timeout: float = 15.0) -> None:
        if self._proc is not None:
            self._proc.stop(timeout)

    def log_tail(self, lines: int = 40) -> str:
        return self._proc.tail(lines) if self._proc is not None else ""


class PrometheusServer(_LoopbackServer):
    """Prometheus with ``config_path``, TSDB in ``workdir/data``, lifecycle API enabled."""

    name = "prometheus"

    def __init__(self, workdir: Path | str, config_path: Path | str, port: int | None = None, *,
                 binaries: PrometheusBinaries | None = None, extra_args: tuple[str, ...] = (),
                 start_timeout: float = 60.0) -> None:
        super().__init__(workdir, config_path, port, start_timeout)
        self.binaries = binaries or find_prometheus_binaries()
        self.extra_args = extra_args

    def _argv(self) -> list[str]:
        return [str(self.binaries.prometheus), f"--config.file={self.config_path}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--storage.tsdb.path={self.workdir / 'data'}", "--web.enable-lifecycle",
                "--log.level=warn", *self.extra_args]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; returns ``data.result`` (a list of ``{"metric": {...}, "value": [t, "v"]}``)."""
        body = http_get_json(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        if body.get("status") != "success":
            raise HarnessError(f"prometheus query {expr!r} failed: {body}")
        return list(body["data"]["result"])

    def wait_for(self, expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Poll ``query(expr)`` until it returns at least one series, bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result or time.monotonic() >= deadline:
                if not result:
                    raise HarnessError(f"prometheus: {expr!r} still empty after {timeout:.0f}s")
                return result
            time.sleep(0.5)

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts as Prometheus sees them (``/api/v1/alerts``)."""
        return list(http_get_json(f"{self.url}/api/v1/alerts")["data"]["alerts"])


class AlertmanagerServer(_LoopbackServer):
    """Alertmanager with ``config_path``, clustering off, storage in ``workdir/data``."""

    name = "alertmanager"

    def __init__(self, workdir: Path | str, config_path: Path | str, port: int | None = None, *,
                 binaries: PrometheusBinaries | None = None, start_timeout: float = 60.0) -> None:
        super().__init__(workdir, config_path, port, start_timeout)
        self.binaries = binaries or find_prometheus_binaries()

    def _argv(self) -> list[str]:
        return [str(self.binaries.alertmanager), f"--config.file={self.config_path}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
                f"--storage.path={self.workdir / 'data'}", "--log.level=warn"]

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds (``/api/v2/alerts``)."""
        return list(http_get_json(f"{self.url}/api/v2/alerts"))
