"""Webhook delivery that one target cannot stall: whole-attempt deadlines, several senders, leases.

Real loopback targets (a trickling one, a healthy one), the real outbox on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading
import time

import httpx
import pytest

from driftline.apps.demo.receiver import RetrainReceiver
from driftline.service.retrain import Dispatcher
from driftline.service.retrain.templates import headers
from driftline.service.settings import RetrainSettings, RetrainTarget
from driftline.service.store import Store
from tests.retrain_support import RetrainSink


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'r.sqlite'}"
    server = request.getfixturevalue("postgres_server")
    return str(server.new_database(f"delivery_{time.time_ns() % 10**10}"))


class Trickler:
    """A target that reads the request, then sends one byte of an answer every ``every`` seconds, forever."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/slow"

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            self.connections += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000:
                if self._stop.wait(self.every):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


def test_a_trickling_target_cannot_hold_a_sender_or_starve_another(store_url) -> None:
    slow, fast = Trickler(every=0.3), RetrainSink("k")
    store = Store(store_url)
    settings = RetrainSettings(targets=[RetrainTarget(name="slow", url=slow.url),
                                        RetrainTarget(name="fast", url=fast.url)],
                               secret="k", timeout_seconds=1.5, senders=2, cooldown_seconds=0,
                               backoff_initial_seconds=0.1, backoff_max_seconds=0.2)
    d = Dispatcher(store, settings)
    try:
        assert d.request("m", "v1", "test", "episode-1", {}) == 2
        d.start()
        deadline = time.monotonic() + 20
        while not fast.accepted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(fast.accepted) == 1  # delivered while the slow target trickled
        while d.results[("m", "slow", "retried")] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        # each slow attempt ended by its 1.5 s deadline although a byte arrived every 0.3 s
        assert d.results[("m", "slow", "retried")] >= 2 and slow.connections >= 2
        rows = {r["target"]: r for r in d.outbox.rows("m")}
        assert rows["fast"]["status"] == "delivered" and rows["slow"]["status"] == "pending"
        assert "deadline" in (rows["slow"]["last_error"] or "") or "Timeout" in (rows["slow"]["last_error"] or "")
        t0 = time.monotonic()
        d.stop()
        assert time.monotonic() - t0 < 5  # an attempt in flight ends by its deadline
    finally:
        d.stop()
        slow.close()
        fast.close()
        store.close()


def test_a_lapsed_lease_is_not_posted_twice(store_url) -> None:
    sink = RetrainSink("k")
    stores = [Store(store_url), Store(store_url)]
    clock = [1000.0]
    settings = RetrainSettings(targets=[RetrainTarget(name="t", url=sink.url)], secret="k", timeout_seconds=2)
    a, b = (Dispatcher(s, settings, clock=lambda: clock[0]) for s in stores)
    try:
        assert a.request("m", "v1", "test", "episode-1", {}) == 1
        row = a._claim()  # replica A claims, then stalls past its lease
        assert row is not None
        clock[0] += a.lease_seconds() + 1
        assert b.deliver_due() == 1  # replica B takes the lapsed row and delivers it
        assert a._attempt(row) is False  # A's renewal fails: it does not post
        a._release(row)
        assert len(sink.attempts) == 1 and len(sink.accepted) == 1
        assert a.outbox.rows("m")[0]["status"] == "delivered"
    finally:
        sink.close()
        for s in stores:
            s.close()


def test_example_receiver_checks_the_timestamp_window_and_idempotency_key() -> None:
    now = [1_700_000_000.0]
    rec = RetrainReceiver("s3cret", window_seconds=300, clock=lambda: now[0]).start()
    try:
        body = b'{"model": "m"}'

        def post(ts: float, key: str, secret: str = "s3cret") -> int:
            h = headers(None, body, secret, str(int(ts)), key)
            return httpx.post(rec.url, content=body, headers=h, timeout=10).status_code

        assert post(now[0], "k1") == 200
        assert post(now[0] + 5, "k1") == 200  # a retry of the same request: acknowledged, not acted on twice
        assert len(rec.requests) == 1 and rec.duplicates == 1
        assert post(now[0] - 301, "k2") == 401  # outside the window: a replayed capture
        assert post(now[0] + 301, "k3") == 401
        assert post(now[0], "k4", secret="wrong") == 401
        assert rec.rejected == 3 and [r["idempotency_key"] for r in rec.requests] == ["k1"]
        sig = hmac.new(b"s3cret", f"{int(now[0])}.".encode() + body, hashlib.sha256).hexdigest()
        assert headers(None, body, "s3cret", str(int(now[0])), "k")["X-Driftline-Signature"] == f"sha256={sig}"
    finally:
        rec.stop()
