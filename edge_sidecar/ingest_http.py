"""The local HTTP API: ``POST /v1/observe`` for apps not written in Python, plus health and metrics.

Body: one JSON object (a row), ``{"rows": [...]}``, a JSON array of rows, or NDJSON (one row per
line, ``Content-Type: application/x-ndjson``). Row fields: ``features`` (object, required),
``outputs``, ``model``, ``model_version``, ``variant``, ``device``, ``cohort``, ``request_id``,
``latency_ms``, ``event_time`` (epoch seconds or ISO-8601). A request is all or nothing: any bad
row answers 400 with ``{"error", "detail"}`` naming the row, and nothing of it is observed, so the
client can fix and resend without double counting (bodies that are not UTF-8, not JSON, nested too
deeply, or of an unsupported Content-Type included). Bodies over the limit answer 413, chunked bodies
411, a missing or bad Content-Length 400.

Standard library only (``http.server``), bound to loopback by default.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from driftline.errors import LabelError

from .errors import ObserveError
from .monitor import Monitor

__all__ = ["ROW_FIELDS", "LocalApi", "parse_labels", "parse_rows"]

log = logging.getLogger("driftline.sidecar.api")
ROW_FIELDS = frozenset({"features", "outputs", "model", "model_version", "variant", "device", "cohort",
                        "request_id", "latency_ms", "event_time"})
_NDJSON = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines",
           "application/jsonlines", "application/json-lines"}
_JSON = {"", "application/json", "text/json"}
Route = Callable[[], tuple[int, str, bytes]]
DISCARD_LIMIT = 64 * 1024 * 1024


def parse_rows(body: bytes, content_type: str, max_rows: int) -> list[dict[str, Any]]:
    """Rows of a request body, each checked field by field; raises ObserveError with a reason."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ObserveError("body is not UTF-8", "malformed") from None
    if ctype in _NDJSON:
        raw: list[Any] = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                if len(raw) >= max_rows:
                    raise ObserveError(f"more than {max_rows} rows in one request", "oversized")
                raw.append(_loads(line, f"line {lineno}"))
    elif ctype in _JSON:
        doc = _loads(text, "body")
        if isinstance(doc, dict) and "rows" in doc:
            if set(doc) != {"rows"} or not isinstance(doc["rows"], list):
                raise ObserveError("a batch is {\"rows\": [...]} with nothing else", "malformed")
            raw = doc["rows"]
        elif isinstance(doc, list):
            raw = doc
        else:
            raw = [doc]
    else:
        raise ObserveError(f"unsupported Content-Type {ctype!r} (use application/json or "
                           "application/x-ndjson)", "malformed")
    if len(raw) > max_rows:
        raise ObserveError(f"{len(raw)} rows in one request, at most {max_rows}", "oversized")
    return [check_row(r, i) for i, r in enumerate(raw)]


def _loads(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and integers past Python's digit limit
        raise ObserveError(f"{where} is not JSON: {exc}", "malformed") from None
    except RecursionError:
        raise ObserveError(f"{where} is nested too deeply", "malformed") from None


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_row(row: Any, i: int) -> dict[str, Any]:
    """One row's fields, type-checked (values inside ``features``/``outputs`` are the sketches' business)."""
    if not isinstance(row, dict):
        raise ObserveError(f"row {i} is a {type(row).__name__}, expected an object", "wrong_type")
    unknown = set(row) - ROW_FIELDS
    if unknown:
        raise ObserveError(f"row {i} has unknown fields: {', '.join(sorted(unknown))}", "malformed")
    if "features" not in row:
        raise ObserveError(f"row {i} has no 'features'", "malformed")

    def bad(field: str, expected: str) -> ObserveError:
        return ObserveError(f"row {i}: '{field}' must be {expected}, got {type(row[field]).__name__}",
                            "wrong_type")

    if not isinstance(row["features"], dict):
        raise bad("features", "an object")
    for field in ("model", "variant", "device"):
        if row.get(field) is not None and not isinstance(row[field], str):
            raise bad(field, "a string")
    for field in ("model_version", "request_id"):
        if row.get(field) is not None and not isinstance(row[field], str | int):
            raise bad(field, "a string or an integer")
    if row.get("latency_ms") is not None and not _is_number(row["latency_ms"]):
        raise bad("latency_ms", "a number")
    et = row.get("event_time")
    if et is not None and not (_is_number(et) and math.isfinite(et) or isinstance(et, str)):
        raise bad("event_time", "epoch seconds or an ISO-8601 string")
    cohort = row.get("cohort")
    if cohort is not None and (not isinstance(cohort, dict) or
                               not all(isinstance(v, str | int) for v in cohort.values())):
        raise bad("cohort", "an object of strings")
    return row


class LocalApi:
    """A threading HTTP server on loopback: ``/v1/observe`` plus the routes the runner adds."""

    def __init__(self, monitor: Monitor, host: str = "127.0.0.1", port: int = 0, *, observe: bool = True,
                 max_body_bytes: int = 8 * 1024 * 1024, max_rows: int = 100_000,
                 routes: Mapping[str, Route] | None = None) -> None:
        self.monitor = monitor
        self.observe_enabled = observe
        self.max_body_bytes = int(max_body_bytes)
        self.max_rows = max_rows
        self.routes = dict(routes or {})
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> LocalApi:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="driftline-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def observe_body(self, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        """Validate a whole request, then observe every row; returns (status, JSON payload)."""
        m = self.monitor
        try:
            rows = parse_rows(body, content_type, self.max_rows)
            for i, r in enumerate(rows):
                try:
                    m.stream_key(r.get("model"), r.get("model_version"), r.get("variant"), r.get("device"),
                                 r.get("cohort"))
                except ObserveError as exc:
                    raise ObserveError(f"row {i}: {exc}", exc.reason) from None
        except ObserveError as exc:
            self._count(exc)
            return 400, {"error": exc.reason, "detail": str(exc)}
        except RecursionError:  # a row nested too deeply for the checks themselves
            deep = ObserveError("a row is nested too deeply", "malformed")
            self._count(deep)
            return 400, {"error": deep.reason, "detail": str(deep)}
        for r in rows:
            m.observe_row(r["features"], r.get("outputs"), model=r.get("model"),
                          model_version=r.get("model_version"), variant=r.get("variant"),
                          request_id=r.get("request_id"), latency_ms=r.get("latency_ms"),
                          event_time=r.get("event_time"), device=r.get("device"), cohort=r.get("cohort"))
        return 200, {"accepted": len(rows)}

    def labels_body(self, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        """``POST /v1/labels``: ``{"labels": [{"id": ..., "label": ...}, ...]}`` (or one such object),
        all or nothing; answers how many found their prediction (an unknown id is counted, not refused)."""
        try:
            doc = parse_labels(body, content_type, self.max_rows)
        except LabelError as exc:
            if self.monitor.labels is not None:
                self.monitor.labels.count_rejected(exc.reason)
            return 400, {"error": exc.reason, "detail": str(exc)}
        assert self.monitor.labels is not None
        try:
            joined = self.monitor.labels.label_many([d["id"] for d in doc], [d["label"] for d in doc],
                                                    self.monitor.clock())
        except LabelError as exc:
            return 400, {"error": exc.reason, "detail": str(exc)}
        return 200, {"received": len(doc), "joined": joined, "unknown": len(doc) - joined}

    def _count(self, exc: ObserveError) -> None:
        try:
            self.monitor.reject(exc)
        except ObserveError:  # a strict monitor re-raises; the HTTP answer already says what went wrong
            pass

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "driftline-sidecar"
            timeout = 30  # seconds a silent client may hold a connection thread

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
                log.debug("%s " + format, self.address_string(), *args)

            def _reply(self, status: int, payload: Any, ctype: str = "application/json") -> None:
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def _discard(self, length: int) -> None:
                # Read (and drop) a refused body, up to a bound, so closing the socket does not reset it
                # under the client before it has read our answer.
                left = min(length, DISCARD_LIMIT)
                while left > 0:
                    got = self.rfile.read(min(left, 65536))
                    if not got:
                        return
                    left -= len(got)

            def _discard_chunked(self) -> None:
                total = 0
                while total < DISCARD_LIMIT:
                    line = self.rfile.readline(1024)
                    try:
                        size = int(line.split(b";", 1)[0].strip() or b"x", 16)
                    except ValueError:
                        return
                    if size == 0:
                        self.rfile.readline(1024)
                        return
                    self._discard(size + 2)
                    total += size

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                route = api.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self._reply(404, {"error": "not_found", "detail": self.path})
                    return
                status, ctype, body = route()
                self._reply(status, body, ctype)

            def do_POST(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                if path == "/v1/labels" and api.monitor.labels is not None:
                    handle = api.labels_body
                elif path == "/v1/observe" and api.observe_enabled:
                    handle = api.observe_body
                else:
                    self.close_connection = True
                    self._reply(404, {"error": "not_found", "detail": self.path})
                    return
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    self.close_connection = True
                    self._discard_chunked()
                    self._reply(411, {"error": "malformed", "detail": "send a Content-Length"})
                    return
                try:
                    length = int(self.headers.get("Content-Length") or "")
                    if length < 0:
                        raise ValueError
                except ValueError:
                    self.close_connection = True
                    api._count(ObserveError("bad Content-Length", "malformed"))
                    self._reply(400, {"error": "malformed", "detail": "missing or bad Content-Length"})
                    return
                if length > api.max_body_bytes:
                    self.close_connection = True
                    self._discard(length)
                    api._count(ObserveError("body too large", "oversized"))
                    self._reply(413, {"error": "oversized",
                                      "detail": f"{length} bytes, at most {api.max_body_bytes}"})
                    return
                body = self.rfile.read(length)
                try:
                    status, payload = handle(body, self.headers.get("Content-Type") or "")
                except Exception:  # a bug must still answer, never drop the connection
                    log.exception("observe failed on a %d-byte body", len(body))
                    status, payload = 500, {"error": "internal", "detail": "see the sidecar's log"}
                self._reply(status, payload)

        return Handler


def parse_labels(body: bytes, content_type: str, max_labels: int) -> list[dict[str, Any]]:
    """The labels of a ``POST /v1/labels`` body, each ``{"id": str | int, "label": number}``; raises
    :class:`~driftline.errors.LabelError` naming the first bad entry."""
    if content_type.split(";", 1)[0].strip().lower() not in _JSON:
        raise LabelError("labels are JSON (Content-Type: application/json)", "malformed")
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise LabelError("body is not UTF-8 JSON", "malformed") from None
    items = doc.get("labels") if isinstance(doc, dict) and "labels" in doc else [doc]
    if not isinstance(items, list) or not items:
        raise LabelError('a labels body is {"labels": [{"id": ..., "label": ...}, ...]}', "malformed")
    if len(items) > max_labels:
        raise LabelError(f"{len(items)} labels in one request, at most {max_labels}", "oversized")
    for i, d in enumerate(items):
        if not isinstance(d, dict) or set(d) - {"id", "label"} or "id" not in d or "label" not in d:
            raise LabelError(f"label {i} must be an object with exactly id and label", "malformed")
        if type(d["id"]) not in (str, int):
            raise LabelError(f"label {i}: id must be a string or an integer", "bad_id")
        if type(d["label"]) not in (int, float, bool):
            raise LabelError(f"label {i}: label must be a number", "wrong_type")
    return items
