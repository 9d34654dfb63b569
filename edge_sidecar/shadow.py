"""Shadow mirroring: each inference call the proxy served is also sent to a shadow model server.

Never in the serving path: after the caller's response has been written, the proxy (its capture
thread, once it decoded the call) hands the request, the live answer and their rows to
:meth:`ShadowMirror.submit`, an O(1) ``put_nowait`` on a bounded queue; a full queue drops the mirror
and counts it (``driftline_sidecar_shadow_mirrors_dropped_total``). One worker thread posts each
mirror to the shadow upstream with a short timeout (:mod:`.httppost`), so a shadow that hangs, fails
or refuses connections costs the worker its timeout and the caller nothing. The worker shares the
GIL with the proxy's event loop, so it decodes only the shadow's answer: the request's rows and the
live outputs come with the mirror.

Serving comes first on this machine too: before each step that holds the GIL or loads the CPU
(posting the mirror, decoding the shadow's answer), the worker waits while the proxy is serving a
request (``busy()``, an int read), polling every 0.1 ms for at most ``SERVING_FIRST_MAX_S`` per step,
so a mirror is done in the gaps between calls; a proxy that is never idle gets its mirrors late by
that bound, and ones that no longer fit the queue are dropped and counted, as always.

The worker then has both answers to the same request, so the pairing happens here, by
construction (no request ids have to travel or be joined later): it records the shadow's outputs
as variant ``shadow`` with the request's id (``monitor.observe``; a failed shadow call is a counted
error of that stream), and folds the pair into the model's :class:`~driftline.pairing.PairedSummary`
(errors per side, label agreement, score differences). The summary rides the next closed window of
the model's shadow stream (:meth:`attach`, called by the sidecar before a window is spooled) as the
wire key ``shadow``; the service judges it (``driftline.stats.shadow``).

Labels and scores of a response: ``score_output`` (default: the first floating-point output column)
and ``label_output`` (default: the first string, boolean or integer output column, else
``score >= positive_threshold``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from driftline.pairing import PairedSummary

from .errors import CaptureError, SettingsError
from .httppost import Poster
from .httpwire import ProtocolError
from .monitor import Monitor
from .oip import Exchange, InferRows, parse_exchange, parse_outputs
from .ratelog import RateLimitedLog

__all__ = ["Mirror", "ShadowMirror"]

log = logging.getLogger("driftline.sidecar.shadow")
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "expect", "host", "te",
                  "trailer", "upgrade", "proxy-connection"})
SMALL_BATCH = 8  # answers with at most this many rows go through the monitor's row buffer
MAX_MODELS = 1000  # pending summaries (one per model) kept between windows
SERVING_FIRST_MAX_S = 0.002  # the longest one step of a mirror waits for the proxy to be idle
SERVING_FIRST_POLL_S = 0.0001


@dataclass(frozen=True, slots=True)
class Mirror:
    """One served inference call to mirror: the request as received and the live answer, and the rows the
    proxy's capture decoded from them (None when it could not), so the worker decodes neither again."""

    model: str
    path: str
    path_version: str | None
    headers: dict[str, str]
    body: bytes
    live_status: int  # 0: the live upstream failed before answering
    live_body: bytes
    request_id: str | None
    live_rows: InferRows | None = None


class ShadowMirror:
    """A bounded queue and one worker posting mirrors to ``upstream``; ``start()`` / ``stop()``."""

    def __init__(self, monitor: Monitor, upstream: str, *, timeout: float = 1.0, queue_size: int = 256,
                 variant: str = "shadow", default_version: str = "shadow", score_output: str | None = None,
                 label_output: str | None = None, positive_threshold: float = 0.5,
                 feature_names: dict[str, list[str]] | None = None, max_features: int = 256,
                 max_body_bytes: int = 16 << 20, busy: Callable[[], bool] | None = None) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise SettingsError(f"proxy.shadow.upstream must be an http:// URL, got {upstream!r}")
        self.monitor = monitor
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout = timeout
        self.variant, self.default_version = variant, default_version
        self.score_output, self.label_output = score_output, label_output
        self.threshold = positive_threshold
        self.feature_names = dict(feature_names or {})
        self.max_features = max_features
        self.max_body = int(max_body_bytes)
        self._busy = busy  # True while the proxy serves a request: the worker waits (bounded) for a gap
        self.waited_seconds = 0.0  # time the worker gave to serving (health, tests)
        self.dropped = 0
        self.results = {"ok": 0, "error": 0}
        self._queue: queue.Queue[Mirror | None] = queue.Queue(maxsize=queue_size)
        self._pending: dict[str, PairedSummary] = {}
        self._lock = threading.Lock()
        self._poster = Poster(self.host, self.port, timeout, self.max_body)  # the worker's alone
        self._thread = threading.Thread(target=self._run, name="driftline-shadow", daemon=True)
        self._ratelog = RateLimitedLog(log)

    # ---- the serving side: O(1), never blocks, never raises --------------------------------------
    def submit(self, mirror: Mirror) -> None:
        """Queue one mirror; a full queue drops it (counted)."""
        try:
            self._queue.put_nowait(mirror)
        except queue.Full:
            self.dropped += 1
            with self._lock:
                s = self._summary(mirror.model)
                if s is not None:
                    s.dropped += 1

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> ShadowMirror:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the worker after the mirror in flight (bounded by the shadow timeout); queued ones are dropped
        (and counted: a shutdown must not wait for a slow shadow)."""
        while True:
            try:
                m = self._queue.get_nowait()
            except queue.Empty:
                break
            if m is not None:
                self.dropped += 1
                with self._lock:
                    s = self._summary(m.model)
                    if s is not None:
                        s.dropped += 1
        try:
            self._queue.put_nowait(None)
        except queue.Full:  # pragma: no cover - just emptied
            pass
        if self._thread.is_alive():
            self._thread.join(self.timeout * 2 + 1 if timeout is None else timeout)
        if not self._thread.is_alive():
            self._poster.close()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    # ---- windows -----------------------------------------------------------------------------------
    def attach(self, profile: Any) -> None:
        """Give a closing shadow window of a model the pairs folded since that model's last one."""
        if profile.key.variant != self.variant:
            return
        with self._lock:
            s = self._pending.pop(profile.key.model, None)
        if s is not None:
            profile.shadow = PairedSummary.merged((profile.shadow, s)).to_dict()

    def pending(self, model: str) -> PairedSummary | None:
        """A copy of the pairs of ``model`` not yet attached to a window (tests, health)."""
        with self._lock:
            s = self._pending.get(model)
            return None if s is None else s.copy()

    def _summary(self, model: str) -> PairedSummary | None:
        s = self._pending.get(model)
        if s is None and len(self._pending) < MAX_MODELS:
            s = self._pending[model] = PairedSummary()
        return s

    # ---- the worker --------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            m = self._queue.get()
            if m is None:
                return
            try:
                self._mirror(m)
            except Exception as exc:  # the worker outlives anything a mirror does
                self._ratelog.warning("mirror", "shadow mirror failed: %s: %s", type(exc).__name__, exc)

    def _serving_first(self) -> None:
        """Wait, at most ``SERVING_FIRST_MAX_S``, while the proxy is serving a request."""
        busy = self._busy
        if busy is None or not busy():
            return
        t0 = time.perf_counter()
        end = t0 + SERVING_FIRST_MAX_S
        while busy() and time.perf_counter() < end:
            time.sleep(SERVING_FIRST_POLL_S)
        self.waited_seconds += time.perf_counter() - t0

    def _post(self, m: Mirror) -> tuple[int, bytes, Mapping[str, str], float]:
        self._serving_first()
        headers = {k: v for k, v in m.headers.items() if k not in _HOP}
        t0 = time.perf_counter()
        a = self._poster.post(m.path, headers, m.body)
        return a.status, a.body, a.headers, (time.perf_counter() - t0) * 1000

    def _mirror(self, m: Mirror) -> None:
        try:
            status, body, headers, latency = self._post(m)
        except (OSError, ProtocolError) as exc:
            status, body, headers, latency = 0, b"", {}, None
            self._ratelog.warning("post", "shadow %s:%s did not answer: %s: %s", self.host, self.port,
                                  type(exc).__name__, exc)
        shadow_ok = status == 200
        self.results["ok" if shadow_ok else "error"] += 1
        live_ok = m.live_status == 200
        shadow_rows = None
        if shadow_ok:
            self._serving_first()
            shadow_rows = self._parse(m, body, headers.get("inference-header-content-length"))
        pair = PairedSummary().add_request(not live_ok, not shadow_ok)
        if live_ok and shadow_rows is not None:  # the request is decoded once (by the capture, else here)
            if m.live_rows is not None:
                live_outputs = m.live_rows.outputs
            else:
                live_outputs = parse_outputs(m.live_body, None, shadow_rows.n, self.feature_names,
                                             self.max_features)[0]
            self._pair(pair, live_outputs, shadow_rows.outputs, shadow_rows.n)
        with self._lock:  # O(1) under the lock: submit() may take it on the serving path (drops)
            s = self._summary(m.model)
            if s is not None:
                s.merge(pair)
        if shadow_rows is not None:
            self._observe(m.model, shadow_rows, latency)
        else:
            self.monitor.observe_error(model=m.model, model_version=m.path_version or self.default_version,
                                       variant=self.variant, latency_ms=latency)

    def _observe(self, model: str, rows: Any, latency: float | None) -> None:
        version = rows.model_version or self.default_version
        if rows.n > SMALL_BATCH:
            self.monitor.observe(rows.features, rows.outputs or None, model=model, model_version=version,
                                 variant=self.variant, request_id=rows.request_id, latency_ms=latency)
            return
        # small answers ride the monitor's row buffer (folded in batches by its thread), as the proxy's do
        feats = {k: v.tolist() for k, v in rows.features.items()}
        outs = {k: v.tolist() for k, v in rows.outputs.items()}
        for i in range(rows.n):
            self.monitor.observe_row({k: v[i] for k, v in feats.items()},
                                     {k: v[i] for k, v in outs.items()} if outs else None, model=model,
                                     model_version=version, variant=self.variant, request_id=rows.request_id,
                                     latency_ms=latency if i == 0 else None)

    def _parse(self, m: Mirror, body: bytes, json_len: str | None) -> Any:
        n = int(json_len) if json_len and json_len.isdigit() else None
        live = m.live_rows
        if live is not None:  # the request's rows as the capture decoded them, the shadow's outputs
            outputs, version, dropped = parse_outputs(body, n, live.n, self.feature_names, self.max_features)
            return InferRows(live.n, live.features, outputs, live.request_id, version or m.path_version, dropped)
        req_len = m.headers.get("inference-header-content-length")
        ex = Exchange(m.model, m.path_version, m.body, int(req_len) if req_len and req_len.isdigit() else None,
                      body, n, m.request_id)
        try:
            return parse_exchange(ex, self.feature_names, self.max_features)
        except CaptureError as exc:
            self._ratelog.warning("parse", "shadow answer not readable: %s", exc)
            return None

    def _pair(self, s: PairedSummary, live: dict[str, np.ndarray], shadow: dict[str, np.ndarray], n: int) -> None:
        ls, ss = self._score(live), self._score(shadow)
        ll, sl = self._label(live, ls), self._label(shadow, ss)
        diffs = None
        if ls is not None and ss is not None and ls.shape == ss.shape:
            diffs = (ss - ls).tolist()
        labels = (ll, sl) if ll is not None and sl is not None and len(ll) == len(sl) == n else (None, None)
        s.add_rows(n, labels[0], labels[1], diffs)

    def _score(self, cols: dict[str, np.ndarray]) -> np.ndarray | None:
        name = self.score_output or next((k for k, v in cols.items() if v.dtype.kind == "f"), None)
        col = cols.get(name) if name is not None else None
        if col is None or col.dtype.kind not in "fiub":
            return None
        return col.astype(np.float64)

    def _label(self, cols: dict[str, np.ndarray], score: np.ndarray | None) -> list[Any] | None:
        name = self.label_output or next((k for k, v in cols.items() if v.dtype.kind in "OUSbiu"), None)
        col = cols.get(name) if name is not None else None
        if col is not None:
            return col.tolist()
        return None if score is None else (score >= self.threshold).tolist()
