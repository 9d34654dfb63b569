"""The shadow worker's HTTP client (edge_sidecar/httppost.py) against scripted raw-socket peers: each
framing, interim answers, a stale keep-alive connection, and peers that hang, flood or speak garbage."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from driftline.edge_sidecar.httppost import Poster, request_bytes
from driftline.edge_sidecar.httpwire import ProtocolError

Script = Callable[[socket.socket, int], None]  # (accepted connection, its index)


class Peer:
    """Accepts connections and runs ``script`` on each; records what it read."""

    def __init__(self, script: Script) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.script, self.accepted = script, 0
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            i, self.accepted = self.accepted, self.accepted + 1
            threading.Thread(target=self._run, args=(c, i), daemon=True).start()

    def _run(self, c: socket.socket, i: int) -> None:
        try:
            self.script(c, i)
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def read_request(c: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += c.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    n = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < n:
        body += c.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture
def peer() -> Iterator[Callable[[Script], Peer]]:
    made: list[Peer] = []

    def make(script: Script) -> Peer:
        made.append(Peer(script))
        return made[-1]

    yield make
    for p in made:
        p.close()


def answers(*raw: bytes) -> Script:
    def script(c: socket.socket, i: int) -> None:
        for r in raw:
            read_request(c)
            c.sendall(r)
        c.recv(1)  # hold the connection until the client closes it

    return script


def test_content_length_chunked_and_interim_answers_on_one_kept_connection(peer: Callable[[Script], Peer]) -> None:
    p = peer(answers(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
                     b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: x\r\n\r\n",
                     b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"))
    post = Poster("127.0.0.1", p.port, 5.0, 1000)
    a = post.post("/v2/models/m/infer", {"x-request-id": "r"}, b"{}")
    assert (a.status, a.body, a.headers["x-a"]) == (200, b"hello", "1")
    assert post.post("/p", {}, b"{}").body == b"abcde"
    assert post.post("/p", {}, b"{}").status == 500
    assert p.accepted == 1
    post.close()


def test_close_framing_reads_to_the_end_and_the_next_call_reconnects(peer: Callable[[Script], Peer]) -> None:
    def script(c: socket.socket, i: int) -> None:
        read_request(c)
        c.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        c.close()

    p = peer(script)
    post = Poster("127.0.0.1", p.port, 5.0, 1000)
    assert [post.post("/p", {}, b"x").body for _ in range(2)] == [b"all of it"] * 2
    assert p.accepted == 2


def test_a_keep_alive_connection_the_peer_closed_while_idle_is_retried_once(peer: Callable[[Script], Peer]) -> None:
    def script(c: socket.socket, i: int) -> None:
        read_request(c)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        if i == 0:
            read_request(c)  # the second call arrives on the kept connection: close without answering
            c.close()
        else:
            c.recv(1)

    p = peer(script)
    post = Poster("127.0.0.1", p.port, 5.0, 1000)
    assert post.post("/p", {}, b"x").body == b"ok"
    assert post.post("/p", {}, b"x").body == b"ok"
    assert p.accepted == 2
    post.close()


def test_peers_that_hang_flood_refuse_or_garble_raise_and_leave_no_connection(peer: Callable[[Script], Peer]) -> None:
    hang = peer(lambda c, i: (read_request(c), c.recv(1)))
    flood = peer(answers(b"HTTP/1.1 200 OK\r\nContent-Length: 1001\r\n\r\n" + b"x" * 1001))
    chunk = b"1f4\r\n" + b"x" * 500 + b"\r\n"  # two 500-byte chunks: over the cap only together
    chunks = peer(answers(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 2 + b"0\r\n\r\n"))
    garbage = peer(answers(b"SSH-2.0-OpenSSH\r\n\r\n"))
    with pytest.raises(TimeoutError):
        Poster("127.0.0.1", hang.port, 0.2, 1000).post("/p", {}, b"x")
    for p in (flood, chunks, garbage):
        post = Poster("127.0.0.1", p.port, 5.0, 700)
        with pytest.raises(ProtocolError):
            post.post("/p", {}, b"x")
        assert post._sock is None
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ConnectionRefusedError):
        Poster("127.0.0.1", port, 1.0, 1000).post("/p", {}, b"x")


def test_a_request_is_one_buffer_with_the_callers_headers_host_and_length() -> None:
    raw = request_bytes("h:1", "/v2/models/m/infer", {"content-type": "application/json", "x-request-id": "r"}, b"{}")
    assert raw == (b"POST /v2/models/m/infer HTTP/1.1\r\nHost: h:1\r\nContent-Length: 2\r\nAccept-Encoding: identity\r\n"
                   b"content-type: application/json\r\nx-request-id: r\r\n\r\n{}")
    assert b"identity" not in request_bytes("h:1", "/", {"accept-encoding": "gzip"}, b"")
