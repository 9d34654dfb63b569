"""One blocking keep-alive HTTP/1.1 connection that posts a body and reads the answer, for a worker thread.

The shadow worker shares its process (and the GIL) with the proxy's event loop, so every
microsecond of Python it spends is one the serving path may wait for. ``http.client`` parses each
answer's headers with the ``email`` package and reads through buffered file objects; this client
reads the head with one ``recv`` loop and parses it with the proxy's own :func:`~.httpwire.parse_head`,
about a third of the work per call. Whole-call deadline (not per ``recv``), answers capped at
``max_body`` bytes, a stale keep-alive connection retried once on a fresh one, no Nagle delay.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

from .httpwire import MAX_HEAD, Head, ProtocolError, parse_head

__all__ = ["Answer", "Poster"]

RECV = 256 * 1024


class _Stale(Exception):
    """A reused connection ended before a byte of the answer: the peer had closed it while idle."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A status, the lower-cased headers and the decoded body of one answer."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class Poster:
    """``post(path, headers, body)`` to ``host:port`` over one reused connection; owned by one thread."""

    def __init__(self, host: str, port: int, timeout: float, max_body: int) -> None:
        self.host, self.port, self.timeout, self.max_body = host, port, timeout, max_body
        self._sock: socket.socket | None = None
        self._buf = b""

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf = b""

    def post(self, path: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Raises OSError (refused, reset, timeout) or ProtocolError (not HTTP, answer too large)."""
        deadline = time.monotonic() + self.timeout
        req = request_bytes(f"{self.host}:{self.port}", path, headers, body)
        for attempt in (0, 1):
            reused = self._sock is not None
            try:
                return self._exchange(req, deadline, fresh=not reused)
            except _Stale:
                self.close()
                if attempt == 1:
                    raise ConnectionResetError("the peer closed the connection without answering") from None
            except BaseException:
                self.close()
                raise
        raise OSError("unreachable")  # pragma: no cover

    # ---- one exchange --------------------------------------------------------------------------
    def _exchange(self, req: bytes, deadline: float, fresh: bool) -> Answer:
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=self._left(deadline))
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self._sock.sendall(req)
            head = self._head(deadline)
        except (BrokenPipeError, ConnectionResetError):
            if fresh:
                raise
            raise _Stale() from None
        if head is None:
            if fresh:
                raise ConnectionResetError("the peer closed the connection without answering")
            raise _Stale()
        while head.first[1].startswith("1") and head.first[1] != "101":  # interim answers (100 Continue)
            head = self._head(deadline)
            if head is None:
                raise ConnectionResetError("the peer closed the connection inside an answer")
        status = int(head.first[1]) if head.first[1].isdigit() else 0
        kind, length = head.framing(response_to="POST", status=status)
        body = self._body(kind, length, deadline)
        if kind == "close" or head.wants_close():
            self.close()
        return Answer(status, head.headers, body)

    def _left(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("shadow answer timed out")
        return left

    def _more(self, deadline: float) -> bytes:
        assert self._sock is not None
        self._sock.settimeout(self._left(deadline))
        return self._sock.recv(RECV)

    def _head(self, deadline: float) -> Head | None:
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                raw, self._buf = self._buf[: end + 4], self._buf[end + 4 :]
                return parse_head(raw)
            if len(self._buf) > MAX_HEAD:
                raise ProtocolError("answer head too large")
            data = self._more(deadline)
            if not data:
                if self._buf.strip():
                    raise ProtocolError("connection closed inside an answer head")
                return None
            self._buf += data

    def _exactly(self, n: int, deadline: float) -> bytes:
        while len(self._buf) < n:
            data = self._more(deadline)
            if not data:
                raise ConnectionResetError("the peer closed the connection inside an answer")
            self._buf += data
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _line(self, deadline: float) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            if len(self._buf) > MAX_HEAD:
                raise ProtocolError("chunk line too long")
            data = self._more(deadline)
            if not data:
                raise ConnectionResetError("the peer closed the connection inside an answer")
            self._buf += data
        out, self._buf = self._buf[: end + 2], self._buf[end + 2 :]
        return out

    def _body(self, kind: str, length: int, deadline: float) -> bytes:
        if kind == "length":
            if length > self.max_body:
                raise ProtocolError(f"answer over {self.max_body} bytes")
            return self._exactly(length, deadline)
        if kind == "chunked":
            parts: list[bytes] = []
            total = 0
            while True:
                try:
                    size = int(self._line(deadline).split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ProtocolError("bad chunk size") from None
                if size == 0:
                    while self._line(deadline) != b"\r\n":  # trailers
                        pass
                    return b"".join(parts)
                total += size
                if total > self.max_body:
                    raise ProtocolError(f"answer over {self.max_body} bytes")
                parts.append(self._exactly(size + 2, deadline)[:-2])
        if kind == "close":
            while True:
                if len(self._buf) > self.max_body:
                    raise ProtocolError(f"answer over {self.max_body} bytes")
                data = self._more(deadline)
                if not data:
                    out, self._buf = self._buf, b""
                    return out
                self._buf += data
        return b""


def request_bytes(host: str, path: str, headers: Mapping[str, str], body: bytes) -> bytes:
    """A POST as one buffer (one segment for typical bodies): ``headers`` as given (hop-by-hop ones
    already removed by the caller), plus Host, Content-Length and, unless given, identity encoding."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    if "accept-encoding" not in headers:
        lines.append("Accept-Encoding: identity")
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
