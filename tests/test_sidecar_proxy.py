"""The OIP v2 reverse proxy over real loopback sockets: byte-for-byte pass-through, capture, failures."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from driftline.edge_sidecar.monitor import Monitor
from driftline.edge_sidecar.proxy import InferenceProxy
from driftline.profile import WindowProfile
from tests.harness.ports import free_port
from tests.sidecar_support import ModelServer, binary_infer_body, wait_until


class RawUpstream:
    """A socket-level upstream: records the exact bytes of each request and answers canned bytes."""

    def __init__(self, response: bytes, close_after: bool = False) -> None:
        self.response = response
        self.close_after = close_after
        self.received: list[bytes] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> RawUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, rest = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.received.append(head + b"\r\n\r\n" + rest[:length])
                buf = rest[length:]
                conn.sendall(self.response)
                if self.close_after:
                    return
        except OSError:
            return
        finally:
            conn.close()


def raw_exchange(port: int, data: bytes, expect: int, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until ``expect`` bytes came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while len(got) < expect:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    with ModelServer() as ms:
        yield ms


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    m = Monitor.configure(background=False, device="dev-1")
    yield m
    m.close(flush=False)


def start_proxy(monitor: Monitor, upstream: str, **kw: Any) -> InferenceProxy:
    return InferenceProxy(monitor, upstream, variant="canary", default_version="0", **kw).start()


def call(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         conn: http.client.HTTPConnection | None = None) -> tuple[int, dict[str, str], bytes]:
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    if conn is None:
        c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders() if k.lower() != "date"}, data


def open_windows(m: Monitor) -> list[WindowProfile]:
    m.flush()
    return m.windower.open_profiles()


def wait_captured(proxy: InferenceProxy, n: int) -> None:
    deadline = time.monotonic() + 10
    while proxy.captured < n and time.monotonic() < deadline:
        time.sleep(0.01)


def test_inference_passes_through_unchanged_and_is_captured(model_server: ModelServer, monitor: Monitor) -> None:
    proxy = start_proxy(monitor, model_server.url)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        direct = http.client.HTTPConnection("127.0.0.1", model_server.port, timeout=10)
        rng = np.random.default_rng(0)
        sent_rows = 0
        for i in range(20):
            batch = int(rng.integers(1, 6))
            x = rng.normal(size=(batch, 3)).round(3)
            body = json.dumps({"id": f"req-{i}", "inputs": [
                {"name": "x", "shape": [batch, 3], "datatype": "FP64", "data": x.ravel().tolist()},
                {"name": "city", "shape": [batch], "datatype": "BYTES", "data": ["oslo"] * batch}]}).encode()
            path = "/v2/models/iris/versions/4/infer" if i % 2 else "/v2/models/iris/infer"
            via = call(proxy.port, "POST", path, body, {"Content-Type": "application/json"}, conn)
            assert model_server.requests[-1][3] == body  # the upstream got the very bytes we sent
            ref = call(model_server.port, "POST", path, body, {"Content-Type": "application/json"}, direct)
            assert via == ref
            sent_rows += batch
        wait_captured(proxy, 20)
        windows = open_windows(monitor)
        assert sum(p.rows for p in windows) == sent_rows
        versions = {p.key.model_version for p in windows}
        assert versions == {"4", "1"}  # from the path, else from the response's model_version
        for p in windows:
            assert p.key.model == "iris" and p.key.variant == "canary" and p.key.source == "dev-1"
            assert set(p.features) == {"x[0]", "x[1]", "x[2]", "city"}
            assert set(p.outputs) == {"score", "label"}
            assert p.runtime is not None and p.runtime.latency_ms.n == 10
        assert proxy.requests == {"ok": 40 - 20, "upstream_error": 0}
    finally:
        proxy.stop()


def test_bytes_pass_through_exactly_on_any_path_with_one_pooled_upstream_connection(monitor: Monitor) -> None:
    canned = (b"HTTP/1.1 200 OK\r\nX-Odd-Header:   spaced  value\r\ncontent-TYPE: text/weird\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    with RawUpstream(canned) as up:
        proxy = start_proxy(monitor, f"http://127.0.0.1:{up.port}")
        try:
            requests = [
                b"POST /v2/models/m/infer?debug=1 HTTP/1.1\r\nHost: x\r\nX-CASE: KeEp\r\nContent-Length: 7\r\n\r\n{bad:1}",
                b"GET /anything/else HTTP/1.1\r\nHost: y\r\nAccept:  */*\r\n\r\n",
                b"PUT /v2/models/m/infer HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            ]
            for raw in requests:
                assert raw_exchange(proxy.port, raw, len(canned)) == canned
            assert up.received == requests
            assert up.connections == 1  # three client connections, one keep-alive upstream connection
            both = requests[1] + requests[2]  # pipelined on one client connection
            assert raw_exchange(proxy.port, both, 2 * len(canned)) == canned * 2
        finally:
            proxy.stop()
    monitor.flush()
    assert monitor.snapshot()["rejected"] == {"malformed": 1}  # the POST to /infer with a non-JSON body


def test_a_pooled_connection_closed_by_the_upstream_is_retried_on_a_fresh_one(monitor: Monitor) -> None:
    canned = b"HTTP/1.1 204 No Content\r\nServer: raw\r\n\r\n"
    with RawUpstream(canned, close_after=True) as up:
        proxy = start_proxy(monitor, f"http://127.0.0.1:{up.port}")
        try:
            for i in range(5):
                raw = f"GET /v2/health/live?i={i} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
                assert raw_exchange(proxy.port, raw, len(canned)) == canned
                time.sleep(0.05)  # the upstream's close arrives before the next request: connection dropped
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
                for i in range(20):  # back to back: some reuse a closed connection and are retried
                    s.sendall(f"GET /v2/health/live?j={i} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
                    got = b""
                    while len(got) < len(canned):
                        got += s.recv(100)
                    assert got == canned
            assert len(up.received) == 25 and up.connections == 25
        finally:
            proxy.stop()


def test_chunked_responses_errors_and_metadata_paths(model_server: ModelServer, monitor: Monitor) -> None:
    proxy = start_proxy(monitor, model_server.url)
    try:
        body = json.dumps({"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [1, 2]}]}).encode()
        for headers in ({"X-Chunked": "1"}, {"X-Fail": "500"}, {"X-Fail": "422"}):
            via = call(proxy.port, "POST", "/v2/models/m/infer", body, headers)
            assert via == call(model_server.port, "POST", "/v2/models/m/infer", body, headers)
            wait_captured(proxy, 1)
        assert call(proxy.port, "GET", "/v2/models/m")[2] == call(model_server.port, "GET", "/v2/models/m")[2]
        assert call(proxy.port, "GET", "/v2/health/ready")[0] == 200
        assert call(proxy.port, "POST", "/v2/repository/index", b"{}")[0] == 404
        (p,) = open_windows(monitor)  # errors join the stream of the version the model last answered as
        assert p.rows == 2 and p.runtime is not None and p.runtime.errors == 2
    finally:
        proxy.stop()


def test_capture_failures_never_change_the_answer(model_server: ModelServer, monitor: Monitor) -> None:
    proxy = start_proxy(monitor, model_server.url, max_capture_bytes=2000)
    try:
        odd_dtype = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP8", "data": [1, 2]}]})
        ragged = json.dumps({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3]]}]})
        huge = json.dumps({"inputs": [{"name": "x", "shape": [200, 2], "datatype": "FP64",
                                       "data": list(range(400))}]})
        for body in (odd_dtype, ragged, huge, "{", "[]"):
            via = call(proxy.port, "POST", "/v2/models/m/infer", body.encode())
            assert via == call(model_server.port, "POST", "/v2/models/m/infer", body.encode())
        time.sleep(0.2)
        monitor.flush()
        snap = monitor.snapshot()
        assert snap["rejected"] == {"wrong_type": 1, "oversized": 1}  # odd dtype; too big to capture
        errors = sum(p.runtime.errors for p in open_windows(monitor) if p.runtime)
        assert errors == 3  # the model server itself refused the ragged, "{" and "[]" bodies
        assert proxy.requests["upstream_error"] == 0
    finally:
        proxy.stop()


def test_binary_tensor_extension_is_captured(model_server: ModelServer, monitor: Monitor) -> None:
    proxy = start_proxy(monitor, model_server.url, feature_names={"x": ["a", "b", "c"]})
    try:
        x = np.arange(12, dtype=np.float32).reshape(4, 3)
        body, header_len = binary_infer_body({"x": x}, request_id="bin-1")
        status, _, out = call(proxy.port, "POST", "/v2/models/m/infer", body,
                              {"Inference-Header-Content-Length": str(header_len)})
        assert status == 200 and json.loads(out)["outputs"][0]["data"] == x.sum(axis=1).tolist()
        assert model_server.requests[-1][3] == body
        wait_captured(proxy, 1)
        (p,) = open_windows(monitor)
        assert p.rows == 4
        assert [p.features[c].sum for c in "abc"] == x.sum(axis=0).tolist()
    finally:
        proxy.stop()


def test_large_bodies_stream_through_and_expect_continue_works(monitor: Monitor) -> None:
    canned = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    with RawUpstream(canned) as up:
        proxy = start_proxy(monitor, f"http://127.0.0.1:{up.port}", max_buffer_bytes=1000)
        try:
            big = b"x" * 300_000
            raw = b"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(big) + big
            assert raw_exchange(proxy.port, raw, len(canned)) == canned
            assert up.received[-1] == raw
            head = b"POST /upload HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
                s.sendall(head)
                assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
                s.sendall(b"hello")
                got = b""
                while len(got) < len(canned):
                    got += s.recv(100)
            assert got == canned and up.received[-1] == head + b"hello"
        finally:
            proxy.stop()
    monitor.flush()
    assert monitor.snapshot()["rejected"] == {"oversized": 1}


def test_an_upstream_past_the_timeout_answers_502_and_the_proxy_serves_on(monitor: Monitor,
                                                                          model_server: ModelServer) -> None:
    hung = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never answers
    slow = start_proxy(monitor, f"http://127.0.0.1:{hung.getsockname()[1]}", timeout=0.3)
    fine = start_proxy(monitor, model_server.url, timeout=0.3)
    try:
        c = http.client.HTTPConnection("127.0.0.1", slow.port, timeout=10)
        status, _, body = call(slow.port, "POST", "/v2/models/m/infer", b"{}", conn=c)
        assert status == 502 and json.loads(body)["detail"].endswith(": timeout")
        assert slow.requests == {"ok": 0, "upstream_error": 1}
        assert call(slow.port, "GET", "/v2/health/ready")[0] == 502  # a new connection is served the same way
        assert call(fine.port, "GET", "/v2/health/ready")[0] == 200
        # the counter moves just after the answer is written: wait for it rather than race it
        assert wait_until(lambda: fine.requests == {"ok": 1, "upstream_error": 0}), fine.requests
        assert not fine._deadlines and not slow._deadlines
    finally:
        slow.stop()
        fine.stop()
        hung.close()


def test_upstream_down_answers_502_and_counts_an_error(monitor: Monitor) -> None:
    proxy = start_proxy(monitor, f"http://127.0.0.1:{free_port()}")
    try:
        status, headers, body = call(proxy.port, "POST", "/v2/models/m/infer", b"{}")
        assert status == 502 and json.loads(body)["error"] == "upstream_unavailable"
        assert call(proxy.port, "GET", "/v2/health/ready")[0] == 502
        assert proxy.requests == {"ok": 0, "upstream_error": 2}
        (p,) = open_windows(monitor)
        assert p.rows == 0 and p.runtime is not None and p.runtime.errors == 1
    finally:
        proxy.stop()
