"""A transparent reverse proxy in front of an Open Inference Protocol v2 model server.

Every request and response passes through byte for byte (heads and bodies as received, chunk
framing included), on any path. For ``POST /v2/models/{name}[/versions/{v}]/infer`` the proxy also
keeps a copy of the request and response bodies and, after the response has gone back to the
client, hands them to a capture thread that decodes the tensors and feeds the monitor. Capture can
fail in any way without touching the inference call; it is counted and logged. With shadow mirroring
on, the capture thread also submits the call's mirror, with the rows it decoded (one hand-off per
call on the event loop; a call that is not captured is mirrored from the loop directly).

One asyncio event loop in its own thread serves clients and keeps a pool of keep-alive connections
to the upstream. A pooled connection the upstream has closed is retried once on a fresh connection
(only for buffered requests, and only when not a byte of response had arrived).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from .errors import CaptureError, ObserveError, SettingsError
from .httpwire import Head, ProtocolError, parse_head, read_body, read_head, relay_body
from .monitor import Monitor
from .oip import INFER_PATH, Exchange, parse_exchange
from .ratelog import RateLimitedLog
from .shadow import Mirror

__all__ = ["InferenceProxy"]

log = logging.getLogger("driftline.sidecar.proxy")
IDLE_SECONDS = 4.0
SMALL_BATCH = 8  # captured requests with at most this many rows go through the monitor's row buffer


class _Upstream(Exception):
    """The upstream could not be reached or broke before answering."""


class InferenceProxy:
    """Listen on ``host:port``, forward to ``upstream``; ``start()`` returns once listening."""

    def __init__(self, monitor: Monitor, upstream: str, host: str = "127.0.0.1", port: int = 0, *,
                 variant: str = "default", default_version: str = "unknown", pool_size: int = 32,
                 timeout: float = 60.0, max_buffer_bytes: int = 64 << 20, max_capture_bytes: int = 16 << 20,
                 max_features_per_tensor: int = 256, feature_names: Mapping[str, Sequence[str]] | None = None,
                 capture_queue: int = 1000) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise SettingsError(f"proxy.upstream must be an http:// URL, got {upstream!r}")
        self.monitor = monitor
        self.up_host, self.up_port = parts.hostname, parts.port or 80
        self.host, self.port = host, port
        self.variant, self.default_version = variant, default_version
        self.pool_size, self.timeout = pool_size, timeout
        self.max_buffer, self.max_capture = int(max_buffer_bytes), int(max_capture_bytes)
        self.max_features = max_features_per_tensor
        self.feature_names = dict(feature_names or {})
        self.requests = {"ok": 0, "upstream_error": 0}
        self.captured = 0
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        # an exchange to capture, and the mirror the capture thread submits once it decoded the call
        self._captures: queue.Queue[tuple[Exchange, Mirror | None] | None] = queue.Queue(maxsize=capture_queue)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._threads: list[threading.Thread] = []
        self._clients: set[asyncio.Task[None]] = set()
        self._deadlines: dict[asyncio.Task[Any], float] = {}  # exchanges in flight, by their client's task
        self._expired: set[asyncio.Task[Any]] = set()
        self._watch_every = min(0.25, max(0.01, self.timeout / 8))  # a timeout fires within this after it is due
        self._versions: dict[str, str] = {}  # model -> version its last response named (bounded by streams)
        self._ratelog = RateLimitedLog(log)
        self.shadow: Any = None  # an edge_sidecar.shadow.ShadowMirror: served calls are mirrored to it
        # requests being served now: written by the loop alone, read (one int load) by the shadow worker,
        # which leaves the GIL and the CPU to serving while it is above zero (see edge_sidecar/shadow.py)
        self.in_flight = 0

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> InferenceProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._client, self.host, self.port, limit=256 * 1024))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.call_soon(self._watch)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        t = threading.Thread(target=run, name="driftline-proxy", daemon=True)
        c = threading.Thread(target=self._capture_loop, name="driftline-capture", daemon=True)
        self._threads = [t, c]
        t.start()
        c.start()
        ready.wait(10)
        if failure:
            self._captures.put(None)
            raise SettingsError(f"proxy cannot listen on {self.host}:{self.port}: {failure[0]}")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            async def shutdown() -> None:
                if self._server is not None:
                    self._server.close()
                for task in list(self._clients):
                    task.cancel()
                await asyncio.gather(*self._clients, return_exceptions=True)
                for _, w, _ in self._idle:
                    w.close()
                self._idle.clear()
                loop.stop()

            asyncio.run_coroutine_threadsafe(shutdown(), loop)
        self._captures.put(None)
        for t in self._threads:
            t.join(10)

    # ---- client side -----------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            while True:
                raw = await read_head(reader)
                if raw is None:
                    break
                req = parse_head(raw)
                self.in_flight += 1
                try:
                    if not await self._exchange(req, reader, writer):
                        break
                finally:
                    self.in_flight -= 1
        except ProtocolError as exc:
            self._plain(writer, 400, "bad_request", str(exc))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        except asyncio.CancelledError:  # shutdown; finishing normally keeps 3.11's stream callback quiet
            pass
        finally:
            writer.close()
            self._clients.discard(task)  # type: ignore[arg-type]

    async def _exchange(self, req: Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Forward one request and its response; returns whether the client connection stays open."""
        method = req.first[0]
        path = req.first[1].split("?", 1)[0] if len(req.first) > 1 else ""
        match = INFER_PATH.match(path) if method == "POST" else None
        kind, length = req.framing()
        sent_100 = "100-continue" in req.get("expect").lower()
        if sent_100:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        streamed = kind == "length" and length > self.max_buffer
        raw_body, body = (b"", b"") if streamed else await read_body(reader, kind, length, self.max_buffer)
        t0 = time.perf_counter()
        task = asyncio.current_task()
        assert task is not None
        self._deadlines[task] = time.monotonic() + self.timeout  # the watchdog enforces it (see _watch)
        try:
            resp, resp_body, keep = await self._forward(req, raw_body, reader if streamed else None, writer,
                                                        method, sent_100, self.max_capture if match else 0)
        except (_Upstream, asyncio.CancelledError) as failure:
            exc: BaseException = failure
            if isinstance(failure, asyncio.CancelledError):
                if task not in self._expired:
                    raise  # shutdown
                self._expired.discard(task)
                task.uncancel()
                exc = TimeoutError()
            self.requests["upstream_error"] += 1
            if match:
                self._error(match)
                self._mirror(match, req, body, 0, None)
            if isinstance(exc, _Upstream) and exc.args and exc.args[0] == "partial":
                return False  # the response had started; all we can do is close
            self._plain(writer, 502, "upstream_unavailable", f"{self.up_host}:{self.up_port}: {str(exc) or 'timeout'}")
            return False
        finally:
            self._deadlines.pop(task, None)
        await writer.drain()
        self.requests["ok"] += 1
        latency = (time.perf_counter() - t0) * 1000
        if match:
            status = int(resp.first[1]) if resp.first[1].isdigit() else 0
            if status != 200:
                self._error(match)
            elif body and resp_body is not None and len(body) <= self.max_capture:
                # the capture thread submits the mirror, with the rows it decoded: one hand-off per call
                # on this loop, and the shadow worker decodes neither the request nor the live answer
                if self._enqueue(match, req, body, resp, resp_body, latency, self._mirror_of(match, req, body, status,
                                                                                           resp_body)):
                    return keep and not req.wants_close() and not resp.wants_close()
            else:
                self._reject(ObserveError("inference body over proxy.max_capture_bytes", "oversized"))
            self._mirror(match, req, body, status, resp_body)
        return keep and not req.wants_close() and not resp.wants_close()

    def _watch(self) -> None:
        """Cancel the exchanges past ``timeout``, every ``_watch_every`` seconds.

        One timer for the whole proxy instead of an ``asyncio.timeout`` per request, whose timer handle
        (created, pushed on the loop's heap, cancelled) is tens of microseconds on the serving path.
        """
        now = time.monotonic()
        for task, deadline in list(self._deadlines.items()):
            if now >= deadline:
                del self._deadlines[task]
                self._expired.add(task)
                task.cancel()
        assert self._loop is not None
        self._loop.call_later(self._watch_every, self._watch)

    # ---- upstream side ---------------------------------------------------------------------------
    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        now = time.monotonic()
        while self._idle:
            r, w, since = self._idle.pop()
            if r.at_eof() or w.is_closing() or now - since > IDLE_SECONDS:
                w.close()
                continue
            return r, w, True
        try:
            r, w = await asyncio.open_connection(self.up_host, self.up_port, limit=256 * 1024)
        except OSError as exc:
            raise _Upstream(str(exc)) from exc
        return r, w, False

    async def _forward(self, req: Head, raw_body: bytes, stream_from: asyncio.StreamReader | None,
                       client: asyncio.StreamWriter, method: str, sent_100: bool,
                       keep: int) -> tuple[Head, bytes | None, bool]:
        for attempt in (0, 1):
            r, w, reused = await (self._connection() if stream_from is None else self._connection_fresh())
            try:
                if len(raw_body) < 65536:
                    w.write(req.raw + raw_body)  # one write, one segment for typical requests
                else:
                    w.write(req.raw)
                    w.write(raw_body)
                if stream_from is not None:
                    kind, length = req.framing()
                    await relay_body(stream_from, w, kind, length, 0)
                await w.drain()
                raw = await read_head(r)
                while raw is not None:
                    head = parse_head(raw)
                    status = int(head.first[1]) if head.first[1].isdigit() else 0
                    if not 100 <= status < 200 or status == 101:
                        break
                    if not (status == 100 and sent_100):
                        client.write(raw)  # interim responses pass through
                    raw = await read_head(r)
            except (ConnectionError, OSError, asyncio.IncompleteReadError, ProtocolError) as exc:
                w.close()
                if reused and attempt == 0 and stream_from is None:
                    continue
                raise _Upstream(str(exc)) from exc
            if raw is None:
                w.close()
                if reused and attempt == 0 and stream_from is None:
                    continue  # the upstream had closed this idle connection
                raise _Upstream("upstream closed the connection without answering")
            kind, length = head.framing(response_to=method, status=status)
            try:
                body = await relay_body(r, client, kind, length, keep, prefix=raw)
            except (ConnectionError, OSError, asyncio.IncompleteReadError, ProtocolError) as exc:
                w.close()
                raise _Upstream("partial") from exc
            reusable = kind != "close" and not head.wants_close() and status != 101
            if reusable and len(self._idle) < self.pool_size:
                self._idle.append((r, w, time.monotonic()))
            else:
                w.close()
            return head, body, kind != "close"
        raise _Upstream("no connection")  # pragma: no cover - the loop always returns or raises

    async def _connection_fresh(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        try:
            r, w = await asyncio.open_connection(self.up_host, self.up_port, limit=256 * 1024)
        except OSError as exc:
            raise _Upstream(str(exc)) from exc
        return r, w, False

    def _plain(self, writer: asyncio.StreamWriter, status: int, error: str, detail: str) -> None:
        body = json.dumps({"error": error, "detail": detail}).encode()
        reason = {400: "Bad Request", 502: "Bad Gateway"}.get(status, "Error")
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: "
                     f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)

    # ---- capture ---------------------------------------------------------------------------------
    def _enqueue(self, match: Any, req: Head, body: bytes, resp: Head, resp_body: bytes, latency: float,
                 mirror: Mirror | None) -> bool:
        """Queue a capture (and the call's mirror); False when the queue is full (counted)."""
        try:
            ex = Exchange(match["model"], match["version"], body, _int(req.get("inference-header-content-length")),
                          resp_body, _int(resp.get("inference-header-content-length")),
                          req.get("x-request-id") or None, latency)
            self._captures.put_nowait((ex, mirror))
            return True
        except queue.Full:
            self._reject(ObserveError("capture queue full", "overloaded"))
            return False

    def _capture_loop(self) -> None:
        while True:
            item = self._captures.get()
            if item is None:
                return
            ex, mirror = item
            rows = None
            try:
                rows = parse_exchange(ex, self.feature_names, self.max_features)
                if rows.model_version and not ex.path_version:
                    self._versions[ex.model] = rows.model_version
                version = rows.model_version or self.default_version
                if rows.n <= SMALL_BATCH:
                    # Small requests ride the monitor's row buffer: folded later, in batches, by its thread.
                    outs = _rows(rows.outputs, rows.n) if rows.outputs else [None] * rows.n
                    for i, (f, o) in enumerate(zip(_rows(rows.features, rows.n), outs, strict=True)):
                        self.monitor.observe_row(f, o, model=ex.model, model_version=version, variant=self.variant,
                                                 request_id=rows.request_id,
                                                 latency_ms=ex.latency_ms if i == 0 else None)
                else:
                    self.monitor.observe(rows.features, rows.outputs or None, model=ex.model, model_version=version,
                                         variant=self.variant, request_id=rows.request_id, latency_ms=ex.latency_ms)
                self.captured += 1
                if rows.outputs_dropped:
                    self._ratelog.warning("outputs", "model %s: response outputs not captured (unreadable or "
                                          "batch size differs from the request)", ex.model)
            except CaptureError as exc:
                self._reject(exc)
            except Exception as exc:  # capture must never take the proxy down
                self._reject(ObserveError(f"{type(exc).__name__}: {exc}", "malformed"))
            if mirror is not None:  # O(1) and never raises: see edge_sidecar/shadow.py
                self.shadow.submit(mirror if rows is None else dataclasses.replace(mirror, live_rows=rows))

    def _mirror_of(self, match: Any, req: Head, body: bytes, status: int, resp_body: bytes | None) -> Mirror | None:
        if self.shadow is None or not body:
            return None
        return Mirror(match["model"], req.first[1], match["version"], req.headers, body, status, resp_body or b"",
                      req.get("x-request-id") or None)

    def _mirror(self, match: Any, req: Head, body: bytes, status: int, resp_body: bytes | None) -> None:
        mirror = self._mirror_of(match, req, body, status, resp_body)
        if mirror is not None:  # O(1) and never raises: see edge_sidecar/shadow.py
            self.shadow.submit(mirror)

    def _error(self, match: Any) -> None:
        # A failed call has no response naming the version: use the path's, else the last one served.
        version = match["version"] or self._versions.get(match["model"]) or self.default_version
        self.monitor.observe_error(model=match["model"], model_version=version, variant=self.variant)

    def _reject(self, exc: ObserveError) -> None:
        try:
            self.monitor.reject(exc)
        except ObserveError:  # a strict monitor (tests) re-raises; the proxy carries on regardless
            pass


def _rows(cols: dict[str, Any], n: int) -> list[dict[str, Any]]:
    names = list(cols)
    values = [cols[k].tolist() for k in names]
    return [dict(zip(names, [v[i] for v in values], strict=True)) for i in range(n)]


def _int(v: str) -> int | None:
    try:
        return int(v) if v else None
    except ValueError:
        return None
