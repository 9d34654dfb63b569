"""One delivery attempt with a deadline for the whole of it: connect, send, and every byte of the answer.

Per-read timeouts are not enough: a target that trickles one byte every two seconds never trips a
ten-second read timeout and holds a sender for good. Here every socket read and write gets at most
the time left until the attempt's deadline, so an attempt ends by it, whatever the target does.
Built on httpcore's pluggable network backend (httpcore is what httpx runs on); no redirects are
followed (a 3xx is a failed attempt, as before).
"""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any

import httpcore

__all__ = ["DeadlineSender"]

_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol,
           httpcore.ProxyError, OSError, ssl.SSLError, ValueError)


class _Deadline(threading.local):
    at: float | None = None


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def _left(self, timeout: float | None) -> float | None:
        at = self._deadline.at
        if at is None:
            return timeout
        left = at - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the delivery attempt's deadline passed")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, self._left(timeout)),
                               self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, deadline: _Deadline) -> None:
        self._inner = httpcore.SyncBackend()
        self._deadline = deadline

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        at = self._deadline.at
        if at is not None:
            left = at - time.monotonic()
            if left <= 0:
                raise httpcore.ConnectTimeout("the delivery attempt's deadline passed")
            timeout = left if timeout is None else min(timeout, left)
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(path, timeout, socket_options), self._deadline)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class DeadlineSender:
    """POSTs that end within ``deadline_seconds`` each; thread-safe (each thread has its own deadline)."""

    def __init__(self, max_connections: int = 16) -> None:
        self._deadline = _Deadline()
        self._pool = httpcore.ConnectionPool(network_backend=_DeadlineBackend(self._deadline),
                                             max_connections=max_connections, retries=0)

    def post(self, url: str, body: bytes, headers: dict[str, str], deadline_seconds: float) -> str | None:
        """None when the target answered 2xx in time, else what went wrong (for the outbox's last_error)."""
        self._deadline.at = time.monotonic() + deadline_seconds
        t = {"connect": deadline_seconds, "read": deadline_seconds, "write": deadline_seconds,
             "pool": deadline_seconds}
        try:
            resp = self._pool.request("POST", url, headers=list(headers.items()), content=body,
                                      extensions={"timeout": t})
        except _ERRORS as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finally:
            self._deadline.at = None
        return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"

    def close(self) -> None:
        self._pool.close()
