"""Just enough HTTP/1.1 message framing for a byte-for-byte reverse proxy (asyncio streams).

Heads are kept as the exact bytes received and only parsed to learn the method, path, status and
body framing. Bodies are relayed as received (chunk framing included) while an optional decoded copy
is kept for capture, up to a limit.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

__all__ = ["Head", "ProtocolError", "parse_head", "read_body", "read_head", "relay_body"]

MAX_HEAD = 256 * 1024
PIECE = 256 * 1024


class ProtocolError(Exception):
    """The peer sent something that is not HTTP/1.x."""


@dataclass(slots=True)
class Head:
    """A parsed request or status line plus headers (lower-cased names), and the raw bytes."""

    raw: bytes
    first: list[str]
    headers: dict[str, str]

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)

    def framing(self, *, response_to: str | None = None, status: int = 0) -> tuple[str, int]:
        """(``none`` | ``length`` | ``chunked`` | ``close``, length) per RFC 9112 section 6.3."""
        if response_to is not None and (response_to == "HEAD" or 100 <= status < 200 or status in (204, 304)):
            return "none", 0
        if "chunked" in self.get("transfer-encoding").lower():
            return "chunked", 0
        cl = self.get("content-length")
        if cl:
            try:
                n = int(cl.split(",")[0].strip())
            except ValueError:
                raise ProtocolError(f"bad Content-Length {cl!r}") from None
            if n < 0:
                raise ProtocolError("negative Content-Length")
            return "length", n
        return ("close", 0) if response_to is not None else ("none", 0)

    def wants_close(self) -> bool:
        conn = self.get("connection").lower()
        if "close" in conn:
            return True
        version = self.first[0] if self.first[0].startswith("HTTP/") else self.first[-1]
        return version == "HTTP/1.0" and "keep-alive" not in conn


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The bytes up to and including the blank line; None on a clean end of stream."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise ProtocolError("connection closed inside a message head") from None
        return None
    except asyncio.LimitOverrunError:
        raise ProtocolError("message head too large") from None


def parse_head(raw: bytes) -> Head:
    lines = raw.decode("latin-1").split("\r\n")
    first = lines[0].split(" ", 2)
    if len(first) < 2:
        raise ProtocolError(f"bad start line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"bad header line {line[:80]!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return Head(raw, first, headers)


async def _chunks(reader: asyncio.StreamReader):  # yields (raw bytes, decoded bytes)
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError("bad chunk size") from None
        if size == 0:
            trailer = b""
            while True:
                t = await reader.readuntil(b"\r\n")
                trailer += t
                if t == b"\r\n":
                    break
            yield line + trailer, b""
            return
        data = await reader.readexactly(size + 2)
        yield line + data, data[:-2]


async def read_body(reader: asyncio.StreamReader, kind: str, length: int, limit: int) -> tuple[bytes, bytes]:
    """Read a whole request body: (raw bytes as sent, decoded bytes). ProtocolError past ``limit``."""
    if kind == "length":
        if length > limit:
            raise ProtocolError("body too large to buffer")
        data = await reader.readexactly(length)
        return data, data
    if kind == "chunked":
        raw, dec, total = [], [], 0
        async for r, d in _chunks(reader):
            total += len(r)
            if total > limit:
                raise ProtocolError("chunked body too large to buffer")
            raw.append(r)
            dec.append(d)
        return b"".join(raw), b"".join(dec)
    return b"", b""


async def relay_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, kind: str, length: int,
                     keep: int, prefix: bytes = b"") -> bytes | None:
    """Copy a body to ``writer`` as it arrives; returns the decoded body if it fits ``keep`` bytes.

    ``prefix`` (the message head) is written together with the first piece: one write, one segment.
    """
    kept: list[bytes] | None = [] if keep > 0 else None
    size = 0

    def hold(d: bytes) -> None:
        nonlocal kept, size
        if kept is not None:
            size += len(d)
            if size > keep:
                kept = None
            else:
                kept.append(d)

    if kind == "length":
        left = length
        if left == 0 and prefix:
            writer.write(prefix)
        while left > 0:
            piece = await reader.readexactly(min(left, PIECE))
            left -= len(piece)
            writer.write(prefix + piece if prefix else piece)
            prefix = b""
            hold(piece)
        return None if kept is None else b"".join(kept)
    if prefix:
        writer.write(prefix)
    if kind == "chunked":
        async for r, d in _chunks(reader):
            writer.write(r)
            hold(d)
    elif kind == "close":
        while True:
            piece = await reader.read(PIECE)
            if not piece:
                break
            writer.write(piece)
            hold(piece)
    return None if kept is None else b"".join(kept)
