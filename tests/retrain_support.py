"""A stand-in retraining system for tests: a loopback HTTP server that checks every signature.

It recomputes ``sha256=HMAC(secret, timestamp + "." + body)`` itself (not with the service's code),
answers 500 to the first ``fail_first`` attempts, then 200 (or ``status``), and records each attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Attempt", "RetrainSink", "WebhookRecorder"]


@dataclass(frozen=True)
class Attempt:
    """One POST as the retraining system saw it."""

    path: str
    idempotency_key: str
    signature_ok: bool
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class RetrainSink:
    """Records attempts; ``accepted`` holds the bodies it acknowledged with a valid signature."""

    def __init__(self, secret: str, fail_first: int = 0, status: int = 200) -> None:
        self.secret = secret.encode()
        self.fail_first = fail_first
        self.status = status
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ts = self.headers.get("X-Driftline-Timestamp", "")
                want = "sha256=" + hmac.new(sink.secret, ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
                ok = bool(ts) and hmac.compare_digest(want, self.headers.get("X-Driftline-Signature", ""))
                with sink._lock:
                    if not ok:
                        code = 401
                    elif sum(a.signature_ok for a in sink.attempts) < sink.fail_first:
                        code = 500
                    else:
                        code = sink.status
                    sink.attempts.append(Attempt(self.path, self.headers.get("Idempotency-Key", ""), ok, code,
                                                 json.loads(raw or b"{}"), dict(self.headers.items())))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="retrain-sink", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/retrain"

    @property
    def accepted(self) -> list[dict[str, Any]]:
        with self._lock:
            return [a.body for a in self.attempts if a.signature_ok and 200 <= a.status < 300]

    @property
    def bad_signatures(self) -> int:
        with self._lock:
            return sum(not a.signature_ok for a in self.attempts)

    def wait_accepted(self, n: int, timeout: float) -> list[dict[str, Any]]:
        """Poll until ``n`` requests were acknowledged or ``timeout`` passes; returns what arrived."""
        deadline = time.monotonic() + timeout
        while len(self.accepted) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.accepted

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class WebhookRecorder:
    """A loopback receiver for Alertmanager's other notifications (the pager): records every JSON body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with rec._lock:
                    rec.bodies.append(json.loads(raw or b"{}"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="webhook-recorder", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/alert"

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every notification received so far."""
        with self._lock:
            return [a for b in self.bodies for a in b.get("alerts", [])]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
