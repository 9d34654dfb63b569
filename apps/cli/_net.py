"""Listening sockets for the commands that serve HTTP: bound before any URL is announced.

A busy port is the most common first-run failure (a second demo, a service already on 8000).
Binding the socket in the command itself turns it into one line and exit 2 before anything is
printed, and the server is then handed the bound socket, so no other process can take the port
between the check and the start.
"""

from __future__ import annotations

import errno
import socket

from driftline.errors import ConfigError

__all__ = ["bind_listener"]


def bind_listener(host: str, port: int, *, option: str = "--port") -> socket.socket:
    """A bound TCP socket on ``host:port`` (not yet listening); a :class:`ConfigError` naming ``option`` if not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host!r}: {exc.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is not "busy"
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use (another driftline service or demo?); "
                              f"stop it or choose another with {option}") from None
        if exc.errno == errno.EACCES:
            raise ConfigError(f"no permission to listen on {host}:{port}; choose a port above 1023 with {option}") \
                from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
