"""A local stand-in for a retraining system: receives the service's signed webhooks and checks them.

What a real receiver should do, in order: verify ``X-Driftline-Signature`` over the timestamp and the
body; refuse a timestamp outside a window around its own clock (a captured request cannot be replayed
later); acknowledge a known ``Idempotency-Key`` with 200 without acting again (the service retries until
it sees a 2xx, so the same request can arrive twice).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["RetrainReceiver"]


class RetrainReceiver:
    """An HTTP server on loopback that records retraining requests whose HMAC signature verifies."""

    def __init__(self, secret: str, host: str = "127.0.0.1", port: int = 0, *, window_seconds: float = 300.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.secret = secret.encode()
        self.window_seconds = window_seconds
        self.clock = clock
        self.requests: list[dict[str, Any]] = []
        self.rejected = 0
        self.duplicates = 0
        self._seen: OrderedDict[str, None] = OrderedDict()  # idempotency keys acted on (bounded)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, 1 << 20))
                ok = receiver.verify(body, self.headers) and receiver.fresh(self.headers)
                key = self.headers.get("Idempotency-Key") or ""
                with receiver._lock:
                    if ok and key in receiver._seen:
                        receiver.duplicates += 1  # acknowledged, not acted on twice
                    elif ok:
                        try:
                            payload = json.loads(body)
                        except ValueError:
                            payload = {"raw": body.decode("utf-8", "replace")}
                        receiver.requests.append({"payload": payload, "idempotency_key": key})
                        receiver._seen[key] = None
                        while len(receiver._seen) > 10_000:
                            receiver._seen.popitem(last=False)
                    else:
                        receiver.rejected += 1
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="retrain-receiver", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/retrain"

    def verify(self, body: bytes, headers: Any) -> bool:
        """Check ``X-Driftline-Signature: sha256=HMAC(secret, timestamp + '.' + body)``."""
        ts = headers.get("X-Driftline-Timestamp", "")
        sig = headers.get("X-Driftline-Signature", "")
        expected = hmac.new(self.secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        return bool(ts) and hmac.compare_digest(sig, f"sha256={expected}")

    def fresh(self, headers: Any) -> bool:
        """Is ``X-Driftline-Timestamp`` within ``window_seconds`` of this receiver's clock?"""
        try:
            ts = float(headers.get("X-Driftline-Timestamp", ""))
        except ValueError:
            return False
        return abs(self.clock() - ts) <= self.window_seconds

    def start(self) -> RetrainReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
