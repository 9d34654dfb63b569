"""Real loopback servers for the sidecar tests: a small OIP v2 model server and an envelope receiver.

Both are standard-library HTTP/1.1 servers with keep-alive, started on a free port and stopped by
the test. The model server decodes tensors on its own (not with the sidecar's parser), so the proxy
tests compare two independent readings of the same bytes.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from driftline.errors import WireFormatError
from driftline.wire import Envelope, decode_envelope

__all__ = ["EnvelopeReceiver", "ModelServer", "binary_infer_body", "wait_until"]

_NP = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4"}


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Any:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stalls

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or ""):
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, body: bytes, ctype: str = "application/json", chunked: bool = False,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 7):
                piece = body[i : i + 7]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


class ModelServer(_Server):
    """``POST /v2/models/{name}[/versions/{v}]/infer``: ``score`` = row sums, ``label`` = pos/neg.

    Request headers steer it: ``X-Fail: <status>`` answers that status, ``X-Chunked: 1`` answers with
    chunked encoding. Every request is recorded as (method, path, headers, body bytes).
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        server = self

        class Handler(_Handler):
            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(("GET", self.path, dict(self.headers), b""))
                if self.path == "/v2/health/ready":
                    self.reply(200, b"")
                elif self.path.startswith("/v2/models/"):
                    name = self.path.split("/")[3]
                    self.reply(200, json.dumps({"name": name, "platform": "test", "versions": ["1"]}).encode())
                else:
                    self.reply(404, b'{"error": "not found"}')

            def do_POST(self) -> None:  # noqa: N802
                body = self.body()
                server.requests.append(("POST", self.path, dict(self.headers), body))
                fail = self.headers.get("X-Fail")
                if fail:
                    self.reply(int(fail), json.dumps({"error": "asked to fail"}).encode())
                    return
                parts = self.path.split("/")
                if len(parts) < 5 or parts[-1] != "infer":
                    self.reply(404, b'{"error": "not found"}')
                    return
                try:
                    doc, rows = _infer_rows(body, self.headers.get("Inference-Header-Content-Length"))
                except (ValueError, KeyError, TypeError) as exc:
                    self.reply(400, json.dumps({"error": str(exc)}).encode())
                    return
                scores = rows.sum(axis=1)
                out = {
                    "model_name": parts[3],
                    "model_version": parts[5] if len(parts) > 6 else "1",
                    "id": doc.get("id", ""),
                    "outputs": [
                        {"name": "score", "shape": [len(scores)], "datatype": "FP64", "data": scores.tolist()},
                        {"name": "label", "shape": [len(scores)], "datatype": "BYTES",
                         "data": ["pos" if s > 0 else "neg" for s in scores]},
                    ],
                }
                self.reply(200, json.dumps(out).encode(), chunked=self.headers.get("X-Chunked") == "1")

        super().__init__(Handler)


def _infer_rows(body: bytes, header_len: str | None) -> tuple[dict[str, Any], np.ndarray]:
    n = int(header_len) if header_len else len(body)
    doc = json.loads(body[:n])
    binary = body[n:]
    cols, offset = [], 0
    for t in doc["inputs"]:
        if t["datatype"] == "BYTES":  # this model only uses numeric inputs
            continue
        shape = t["shape"]
        size = (t.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            arr = np.frombuffer(binary[offset : offset + size], dtype=_NP[t["datatype"]])
            offset += size
        else:
            arr = np.asarray(t["data"], dtype=np.float64)
        arr = arr.astype(np.float64).reshape(shape)
        cols.append(arr.reshape(shape[0], -1))
    return doc, np.hstack(cols)


def binary_infer_body(inputs: dict[str, np.ndarray], request_id: str = "") -> tuple[bytes, int]:
    """An OIP request using the binary tensor extension: (body, JSON header length)."""
    tensors, blobs = [], []
    for name, arr in inputs.items():
        data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        tensors.append({"name": name, "shape": list(arr.shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": len(data)}})
        blobs.append(data)
    head = json.dumps({"id": request_id, "inputs": tensors}).encode()
    return head + b"".join(blobs), len(head)


class EnvelopeReceiver(_Server):
    """``POST /v1/ingest`` as the service's contract says: decodes envelopes, de-duplicates by id.

    ``fail_with = (status, times)`` answers that status to the next ``times`` requests; ``token``
    requires ``Authorization: Bearer <token>``.
    """

    def __init__(self, token: str | None = None, port: int = 0) -> None:
        self.envelopes: dict[str, Envelope] = {}
        self.posts = 0
        self.duplicates = 0
        self.malformed = 0
        self.fail_with: tuple[int, int] | None = None
        self.token = token
        self.lock = threading.Lock()
        server = self

        class Handler(_Handler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.body()
                with server.lock:
                    server.posts += 1
                    if server.fail_with and server.fail_with[1] > 0:
                        status, times = server.fail_with
                        server.fail_with = (status, times - 1)
                        self.reply(status, json.dumps({"error": "test", "detail": "asked to fail"}).encode())
                        return
                if server.token and self.headers.get("Authorization") != f"Bearer {server.token}":
                    self.reply(401, b'{"error": "unauthorized", "detail": "bad token"}')
                    return
                if self.path != "/v1/ingest":
                    self.reply(404, b'{"error": "not_found"}')
                    return
                try:
                    env = decode_envelope(body)
                except WireFormatError as exc:
                    with server.lock:
                        server.malformed += 1
                    self.reply(400, json.dumps({"error": "malformed", "detail": str(exc)}).encode())
                    return
                with server.lock:
                    dup = env.envelope_id in server.envelopes
                    server.duplicates += dup
                    server.envelopes.setdefault(env.envelope_id, env)
                self.reply(200, json.dumps({"envelope_id": env.envelope_id,
                                            "result": "duplicate" if dup else "accepted",
                                            "windows": len(env.profiles)}).encode())

        super().__init__(Handler, port)

    def rows(self) -> int:
        with self.lock:
            return sum(env.rows for env in self.envelopes.values())

    def profiles(self) -> list[Any]:
        with self.lock:
            return [p for env in self.envelopes.values() for p in env.profiles]


def wait_until(cond: Any, timeout: float = 20.0) -> bool:
    """Poll ``cond`` every 50 ms for at most ``timeout`` seconds (a bounded loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False
