"""The service reporting on itself: runtime collectors, duration histograms, JSON logs.

* :func:`add_runtime_collectors` puts client_python's process, platform and GC collectors on the
  service's own registry (never the global one).
* :class:`Timings` holds the ``driftline_*_seconds`` histograms: HTTP requests (by route template
  and status class, so labels stay bounded whatever a client sends), evaluation passes, ingest
  batches and retraining deliveries.
* :class:`HttpTimingMiddleware` is a plain ASGI middleware that times every request and names it by
  the route template FastAPI matched (``/v1/models/{model}/drift``), ``unmatched`` otherwise.
* :class:`JsonFormatter` writes one JSON object per log line, with the request id and model when the
  code that logs is serving one (``log_format: json``).
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, Histogram, PlatformCollector, ProcessCollector

__all__ = ["HttpTimingMiddleware", "JsonFormatter", "Timings", "add_runtime_collectors", "configure_logging",
           "current_model", "current_request_id"]

# Request-scoped context for log lines (set by the middleware and by routes that know their model).
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("driftline_request_id", default=None)
current_model: contextvars.ContextVar[str | None] = contextvars.ContextVar("driftline_model", default=None)

access = logging.getLogger("driftline.service.access")

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PASS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def add_runtime_collectors(registry: CollectorRegistry) -> CollectorRegistry:
    """``process_*`` (CPU, memory, file descriptors, start time), ``python_info`` and ``python_gc_*``."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class Timings:
    """The service's duration histograms, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.http = Histogram("driftline_http_request_duration_seconds", "HTTP request duration by route template",
                              ["method", "route", "status_class"], registry=registry, buckets=HTTP_BUCKETS)
        self.evaluation = Histogram("driftline_evaluation_pass_duration_seconds",
                                    "Duration of one background evaluation pass (drift, canaries, policy)",
                                    ["result"], registry=registry, buckets=PASS_BUCKETS)
        self.ingest = Histogram("driftline_ingest_batch_duration_seconds",
                                "Decoding and storing one ingest batch (an HTTP envelope or a Kafka poll)",
                                ["transport"], registry=registry, buckets=HTTP_BUCKETS)
        self.delivery = Histogram("driftline_retrain_delivery_duration_seconds",
                                  "One retraining request delivery attempt", ["target", "result"],
                                  registry=registry, buckets=HTTP_BUCKETS)
        for result in ("ok", "error"):
            self.evaluation.labels(result)

    @contextmanager
    def ingest_batch(self, transport: str) -> Iterator[None]:
        """Time a block as one ingest batch of ``transport`` (``http`` or ``kafka``)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ingest.labels(transport).observe(time.perf_counter() - t0)

    def on_delivery(self, target: str, ok: bool, seconds: float) -> None:
        """Hook for the retraining dispatcher: one attempt to ``target`` took ``seconds``."""
        self.delivery.labels(target, "delivered" if ok else "failed").observe(seconds)


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class HttpTimingMiddleware:
    """Times each HTTP request; labels are the method, the matched route template and the status class.

    Also sets the request id (the client's ``X-Request-ID`` when it is a short token, else a new one),
    returns it in the response header and makes it available to log lines.
    """

    METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
    QUIET = frozenset({"/metrics", "/healthz", "/readyz"})  # scrapes and probes log at debug level

    def __init__(self, app: Any, timings_of: Callable[[], Timings | None]) -> None:
        self.app = app
        self.timings_of = timings_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        token = current_request_id.set(rid)
        mtoken = current_model.set(None)
        status = 500
        t0 = time.perf_counter()

        async def send_wrapped(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapped)
        finally:
            elapsed = time.perf_counter() - t0
            route = scope.get("route")
            template = getattr(route, "path", None) or ("unmatched" if status == 404 else "other")
            method = scope.get("method", "GET")
            timings = self.timings_of()
            if timings is not None:
                timings.http.labels(method if method in self.METHODS else "other", template,
                                    f"{status // 100}xx").observe(elapsed)
            model = current_model.get() or (scope.get("path_params") or {}).get("model")
            quiet = template in self.QUIET and status < 400
            access.log(logging.DEBUG if quiet else logging.INFO, "%s %s %d %.1fms", method, template, status,
                       elapsed * 1000, extra={"request_id": rid, "model": model, "status": status})
            current_request_id.reset(token)
            current_model.reset(mtoken)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers") or ():
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if 0 < len(text) <= 64 and all(c.isalnum() or c in "-_.:" for c in text):
                return text
            break
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request and model ids, exception text."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or current_request_id.get()
        model = getattr(record, "model", None) or current_model.get()
        if rid:
            out["request_id"] = rid
        if model:
            out["model"] = model
        status = getattr(record, "status", None)
        if status is not None:
            out["status"] = status
        if record.exc_info:
            out["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(fmt: str, level: int | str = logging.INFO) -> None:
    """Route the root logger to stderr as ``text`` or ``json`` (one line per event, newlines escaped)."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
