"""The sidecar process: monitor + spool + shipper + local API (+ proxy), wired from one settings object.

``Sidecar(settings).run()`` serves until SIGTERM or SIGINT, then stops in the order that loses
nothing: stop taking traffic (proxy, then the local API), fold buffered rows and close every open
window into the spool (reason ``shutdown``), give the shipper ``shutdown_grace_seconds`` to deliver,
and leave whatever is still pending on disk for the next start.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from driftline import __version__
from driftline.profile import WindowProfile

from .embedded import producer_map
from .golden import GoldenCollector, GoldenRunner, Predict
from .hostwatch import HostWatch
from .ingest_http import LocalApi
from .judge import Judge, JudgeCollector
from .metrics import HostWatchCollector, SidecarCollector, render, sidecar_registry
from .monitor import Monitor
from .monitorconfig import MonitorConfig
from .proxy import InferenceProxy
from .settings import SidecarSettings
from .shadow import ShadowMirror
from .shipper import Shipper
from .spool import Spool
from .transport import Transport, make_transport

__all__ = ["Sidecar"]

log = logging.getLogger("driftline.sidecar")


class Sidecar:
    """Everything ``driftline sidecar`` runs; also usable in-process (``start()`` / ``stop()``)."""

    def __init__(self, settings: SidecarSettings, *, transport: Transport | None = None,
                 golden_predict: Predict | None = None,
                 golden_version: Callable[[str], str | None] | None = None) -> None:
        s = self.settings = settings
        # golden-set conformance (edge_sidecar/golden.py): the OIP upstream, or the SDK callback given here
        self.golden: GoldenRunner | None = (GoldenRunner.from_settings(s, golden_predict, golden_version)
                                            if s.golden.enabled else None)
        compress = {"auto": None, "always": True, "never": False}[s.transport.compress]
        self.spool = Spool(s.spool.path, int(s.spool.max_bytes), fsync=s.spool.fsync, producer=self.producer,
                           rejected_max_files=s.spool.rejected_max_files, compress=compress)
        self.transport = transport or make_transport(s.transport)
        self.shipper = Shipper(self.spool, self.transport, producer=self.producer,
                               batch_windows=s.shipper.batch_windows,
                               backoff_initial=s.shipper.backoff_initial_seconds,
                               backoff_max=s.shipper.backoff_max_seconds,
                               conformance=self.golden.entries if self.golden is not None else None,
                               compress=compress)
        self.judge: Judge | None = Judge.from_settings(s) if s.judge.enabled else None
        self.monitor = Monitor(MonitorConfig.from_settings(s), sink=self._spool_window)
        if self.judge is not None:  # multivariate drift: the reference's reconstruction model, per batch
            self.monitor.set_reconstruction(self.judge.references.reconstruction)
        self.proxy: InferenceProxy | None = None
        if s.proxy.enabled:
            p = s.proxy
            self.proxy = InferenceProxy(
                self.monitor, p.upstream, p.host, p.port, variant=p.variant, default_version=p.model_version,
                pool_size=p.pool_size, timeout=p.timeout_seconds, max_buffer_bytes=int(p.max_buffer_bytes),
                max_capture_bytes=int(p.max_capture_bytes), max_features_per_tensor=p.max_features_per_tensor,
                feature_names=p.feature_names, capture_queue=p.capture_queue)
        self.shadow: ShadowMirror | None = None
        if self.proxy is not None and s.proxy.shadow.enabled:
            sh = s.proxy.shadow
            self.shadow = self.proxy.shadow = ShadowMirror(
                self.monitor, sh.upstream or "", timeout=sh.timeout_seconds, queue_size=sh.queue, variant=sh.variant,
                default_version=sh.model_version, score_output=sh.score_output, label_output=sh.label_output,
                positive_threshold=sh.positive_threshold, feature_names=s.proxy.feature_names,
                max_features=s.proxy.max_features_per_tensor, max_body_bytes=int(s.proxy.max_capture_bytes),
                busy=self._proxy_busy)
        self.registry = sidecar_registry(SidecarCollector(self.monitor, self.spool, self.shipper, self.proxy))
        routes = {"/healthz": self._health, "/metrics": self._metrics}
        if self.judge is not None:
            self.registry.register(JudgeCollector(self.judge))
            routes["/v1/drift"] = self._drift
        if self.golden is not None:
            self.registry.register(GoldenCollector(self.golden))
        self.api = LocalApi(self.monitor, s.api.host, s.api.port, observe=s.api.observe,
                            max_body_bytes=int(s.api.max_body_bytes), max_rows=s.api.max_rows_per_request,
                            routes=routes)
        self._stopping = threading.Event()
        self._stopped = False
        self.hostwatch = HostWatch(s.watch_pid, s.watch_pid_file)
        if self.hostwatch.enabled:
            self.registry.register(HostWatchCollector(self.hostwatch))

    # ---- wiring ----------------------------------------------------------------------------------
    def _proxy_busy(self) -> bool:
        """Whether the proxy is serving a request now (the shadow worker waits for a gap)."""
        return self.proxy is not None and self.proxy.in_flight > 0

    def producer(self) -> dict[str, str]:
        """The envelope producer map: who sent it, and the device's backlog and footprint right now."""
        out = producer_map("driftline-sidecar", self.settings.device, self.spool)
        if getattr(self, "hostwatch", None) is not None:  # the spool asks for a map before __init__ ends
            out.update(self.hostwatch.producer_keys())
        return out

    def _spool_window(self, profile: WindowProfile, reason: str) -> None:
        if self.shadow is not None:
            self.shadow.attach(profile)  # a shadow window carries the pairs folded since the last one
        if self.judge is not None and reason != "labels":  # a labels-only window has no rows to judge
            self.judge.judge_window(profile)  # attaches the device's verdict before the window is spooled
        self.spool.put(profile)
        self.shipper.wake()

    def _health(self) -> tuple[int, str, bytes]:
        snap = self.monitor.snapshot()
        st = self.spool.stats()
        problem = None if self._stopping.is_set() else self.shipper.problem()
        body: dict[str, Any] = {
            "status": "degraded" if problem else "ok",
            "reason": problem,
            "device": self.settings.device,
            "version": __version__,
            "open_windows": snap["open_windows"],
            "open_rows": snap["open_rows"],
            "buffered_rows": snap["buffered_rows"],
            # closed windows the spool has not taken yet (a full disk keeps them here, retried each tick)
            "unspooled_windows": snap["pending_windows"], "spool_write_errors": snap["sink_errors"],
            "windows_dropped": snap["windows_dropped"],
            "observed_rows": sum(snap["observed"].values()),
            "rejected": snap["rejected"],
            "spool": {"path": str(self.spool.root), "pending": st.pending, "pending_rows": st.pending_rows, "bytes": st.bytes,
                      "limit": st.limit, "merged": st.merged, "dropped": st.dropped, "rejected": st.rejected,
                      "oldest_age_s": round(st.oldest_age_s, 3)},
            "shipper": {"transport": self.transport.name, "delivered": self.shipper.deliveries["ok"],
                        "failures": self.shipper.failures, "last_error": self.shipper.last_error},
        }
        if self.proxy is not None:
            body["proxy"] = {"port": self.proxy.port, "requests": dict(self.proxy.requests),
                             "captured": self.proxy.captured}
        if self.golden is not None:
            body["golden"] = self.golden.health()
        if self.shadow is not None:
            body["shadow"] = {"mirrored": dict(self.shadow.results), "dropped": self.shadow.dropped,
                              "queued": self.shadow.queued}
        return 200, "application/json", json.dumps(body).encode()

    def _drift(self) -> tuple[int, str, bytes]:
        assert self.judge is not None
        return 200, "application/json", json.dumps(self.judge.drift_body()).encode()

    def _metrics(self) -> tuple[int, str, bytes]:
        return 200, "text/plain; version=0.0.4; charset=utf-8", render(self.registry)

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Sidecar:
        for what, host in (("api", self.settings.api.host), ("proxy", self.settings.proxy.host)):
            if host not in ("127.0.0.1", "localhost", "::1") and (what == "api" or self.proxy is not None):
                log.warning("%s listens on %s: it has no authentication, keep it on a trusted network", what, host)
        self.shipper.start()
        self.monitor.start()
        if self.judge is not None:
            self.judge.start()
        if self.proxy is not None:
            # The proxy's event loop must get the GIL back quickly from the capture and folding threads:
            # CPython's default 5 ms switch interval shows up as milliseconds of tail latency on
            # inference; at 0.1 ms the added p99 measured by bench/bench_sidecar.py drops below 0.3 ms.
            sys.setswitchinterval(min(sys.getswitchinterval(), 0.0001))
            if self.shadow is not None:
                self.shadow.start()
            self.proxy.start()
        self.api.start()
        if self.golden is not None:
            self.golden.start()  # after the proxy: its first run is the "start" run
        return self

    def stop(self, grace: float | None = None) -> bool:
        """Stop cleanly; returns True when the spool was empty at the end of the grace period."""
        if self._stopped:
            return self.spool.stats().pending == 0
        self._stopped = True
        self._stopping.set()
        if self.golden is not None:
            self.golden.stop()
        if self.proxy is not None:
            self.proxy.stop()
        if self.shadow is not None:
            self.shadow.stop()  # before the monitor closes: its last pairs ride the shutdown windows
        self.api.stop()
        self.monitor.close()
        if self.judge is not None:
            self.judge.stop()
        grace = self.settings.shipper.shutdown_grace_seconds if grace is None else grace
        empty = self.shipper.drain(grace) if grace > 0 else self.spool.stats().pending == 0
        self.shipper.stop()
        self.spool.close()
        st = self.spool.stats()
        log.info("sidecar stopped: %d windows (%d rows) left in the spool", st.pending, st.pending_rows)
        return empty

    def request_stop(self, *_: Any) -> None:
        self._stopping.set()

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit code."""
        previous = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            where = f"api=http://{self.settings.api.host}:{self.api.port}"
            if self.proxy is not None:
                where += f" proxy=http://{self.proxy.host}:{self.proxy.port} -> {self.settings.proxy.upstream}"
            print(f"driftline sidecar {__version__} running: {where} transport={self.transport.name} "
                  f"spool={self.settings.spool.path}", file=sys.stderr, flush=True)
            while not self._stopping.wait(0.5):
                pass
            t0 = time.monotonic()
            self.stop()
            print(f"driftline sidecar stopped in {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
