"""The sidecar's local HTTP API under malformed bodies, and spool writes that fail: a real sidecar on
loopback, a real file system."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.edge_sidecar.fsutil import atomic_write
from driftline.edge_sidecar.runner import Sidecar
from tests.sidecar_support import EnvelopeReceiver
from tests.test_sidecar_http import request, sidecar_settings


@pytest.fixture
def api_port(tmp_path: Path) -> Iterator[int]:
    with EnvelopeReceiver() as rx:
        sc = Sidecar(sidecar_settings(tmp_path, rx.url, api={"port": 0, "max_body_bytes": 4_000_000})).start()
        try:
            yield sc.api.port
        finally:
            sc.stop(grace=0)


ROW = {"model": "m", "features": {"a": 1.0}}


def _deep(depth: int) -> list[bytes]:
    """Bodies nested deeper than the interpreter's recursion limit allows json to parse."""
    return [b"[" * depth + b"]" * depth,
            b'{"model": "m", "features": ' + b'{"a": ' * depth + b"1" + b"}" * (depth + 1),
            b'{"rows": ' + b"[" * depth + b"]" * depth + b"}"]


CASES = [
    # (body, content type, status, error reason); an int body is a _deep() index
    (b"\xff\xfe not utf-8", "application/json", 400, "malformed"),
    (b"{not json", "application/json", 400, "malformed"),
    (b"", "application/json", 400, "malformed"),
    (0, "application/json", 400, "malformed"),
    (1, "application/json", 400, "malformed"),
    (2, "application/json", 400, "malformed"),
    (b"[" * 9000 + b"]" * 9000 + b"\n", "application/x-ndjson", 400, "malformed"),
    (b'{"model": "m", "features": {"a": 1}, "model_version": ' + b"9" * 5000 + b"}", "application/json", 400,
     "malformed"),
    (json.dumps(ROW).encode(), "text/csv", 400, "malformed"),
    (b'"just a string"', "application/json", 400, "wrong_type"),
    (b"[1, 2]", "application/json", 400, "wrong_type"),
    (b'{"model": "m", "features": [1, 2]}', "application/json", 400, "wrong_type"),
    (b'{"model": "m", "features": {"a": 1}, "latency_ms": "fast"}', "application/json", 400, "wrong_type"),
    (b'{"model": "m", "features": {"a": 1}, "event_time": true}', "application/json", 400, "wrong_type"),
    (b'{"model": "m", "features": {"a": 1}, "cohort": {"site": [1]}}', "application/json", 400, "wrong_type"),
    (b'{"model": "m", "features": {"a": 1}, "typo": 1}', "application/json", 400, "malformed"),
    (b'{"rows": {"features": {}}}', "application/json", 400, "malformed"),
    (b"x" * 4_100_000, "application/json", 413, "oversized"),
]


@pytest.mark.parametrize(("body", "ctype", "status", "reason"), CASES,
                         ids=[f"case{i}" for i in range(len(CASES))])
def test_every_malformed_body_gets_its_documented_4xx(api_port: int, body: bytes | int, ctype: str, status: int,
                                                      reason: str) -> None:
    if isinstance(body, int):  # the limit in force now (a library may have raised it), capped for the C stack
        body = _deep(min(sys.getrecursionlimit() + 1000, 200_000))[body]
    got, payload = request(api_port, "POST", "/v1/observe", body, {"Content-Type": ctype})
    assert (got, payload["error"]) == (status, reason), payload
    assert payload["detail"]
    ok, _ = request(api_port, "POST", "/v1/observe", json.dumps(ROW).encode(),
                    {"Content-Type": "application/json"})
    assert ok == 200  # the sidecar keeps serving


def test_framing_errors_are_answered(api_port: int) -> None:
    def raw(head: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", api_port), timeout=10) as s:
            s.sendall(head)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out

    assert raw(b"POST /v1/observe HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(b"POST /v1/observe HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(b"POST /v1/observe HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(b"POST /v1/observe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
               ).startswith(b"HTTP/1.1 411")
    assert raw(b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").startswith(b"HTTP/1.1 404")


def test_a_failed_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    tmp, dest = tmp_path / "tmp", tmp_path / "pending"
    tmp.mkdir()
    dest.mkdir()
    (dest / "w1").mkdir()  # the rename onto a non-empty directory fails after the temp file is written
    (dest / "w1" / "x").write_bytes(b"")
    with pytest.raises(OSError):
        atomic_write(tmp, dest, "w1", b"data" * 1000)
    assert list(tmp.iterdir()) == []


def test_a_spool_write_past_the_file_size_limit_leaves_no_temp_file(tmp_path: Path) -> None:
    # A real write failure (EFBIG from RLIMIT_FSIZE) in a child process, so the limit touches nothing else.
    script = textwrap.dedent(f"""
        import resource, signal, numpy as np
        from driftline.edge_sidecar.errors import SpoolError
        from driftline.edge_sidecar.spool import Spool
        from driftline.profile import StreamKey, WindowProfile
        spool = Spool({str(tmp_path / "spool")!r}, 1 << 30, fsync=False)
        p = WindowProfile(StreamKey.of("m", "v1"), 0, 60)
        p.update({{f"f{{i}}": np.random.default_rng(i).normal(size=5000) for i in range(40)}})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        try:
            spool.put(p)
            print("WROTE")
        except SpoolError as exc:
            print("REFUSED", exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("REFUSED") and "too large" in out.stdout.lower(), out.stdout
    assert list((tmp_path / "spool" / "tmp").iterdir()) == []
    assert list((tmp_path / "spool" / "pending").iterdir()) == []
