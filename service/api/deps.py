"""What every route needs: the running service's parts (:mod:`..parts`), and the access checks, one small function each.

- :func:`require_write`: ``api_token`` on writes;
- :func:`require_read`: ``read_token`` (or ``api_token``) on reads, when a read token is set;
- :func:`ingest_identity` and :func:`check_device`: a device token ingests only that device's windows;
- :func:`require_report`: the expensive report needs a token and is rate-limited.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends, Request
from pydantic import SecretStr

from ..errors import Forbidden, PayloadTooLarge, TooManyRequests, Unauthorized
from ..parts import Parts

__all__ = ["IngestIdentity", "PartsDep", "ReadAccess", "ReportAccess", "WriteAccess",
           "bearer", "check_device", "ingest_identity", "read_body", "require_read", "require_report",
           "require_write"]


def get_parts(request: Request) -> Parts:
    return request.app.state.parts  # type: ignore[no-any-return]


PartsDep = Annotated[Parts, Depends(get_parts)]


def bearer(request: Request) -> str:
    """The bearer token the request carries ('' when none)."""
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


def _is(given: str, secret: SecretStr | None) -> bool:
    return secret is not None and hmac.compare_digest(given.encode(), secret.get_secret_value().encode())


def require_write(request: Request, parts: PartsDep) -> None:
    """Writes need ``api_token`` when one is set (the CLI refuses to listen beyond loopback without one)."""
    token = parts.settings.api_token
    if token is not None and not _is(bearer(request), token):
        raise Unauthorized("a valid bearer token is required for this endpoint")


def require_read(request: Request, parts: PartsDep) -> None:
    """Reads need ``read_token`` (or ``api_token``) when a read token is set; else they are open."""
    s = parts.settings
    if s.read_token is None:
        return
    given = bearer(request)
    if not (_is(given, s.read_token) or _is(given, s.api_token)):
        raise Unauthorized("a valid bearer token (read_token or api_token) is required for this endpoint")


def ingest_identity(request: Request, parts: PartsDep) -> str | None:
    """Who may ingest: ``None`` for full write access, or the one device a device token names."""
    s = parts.settings
    given = bearer(request)
    for device, token in s.device_tokens.items():
        if _is(given, token):
            return device
    if s.api_token is None and not s.device_tokens:
        return None
    if not _is(given, s.api_token):
        raise Unauthorized("a valid bearer token (api_token or a device token) is required to ingest")
    return None


def check_device(device: str | None, sources: Iterable[str]) -> None:
    """A device token writes only its own windows (``source`` is the device id)."""
    if device is None:
        return
    others = sorted({src for src in sources if src != device})
    if others:
        raise Forbidden(f"the token of device {device!r} cannot write windows of {others[:5]}")


def require_report(request: Request, parts: PartsDep) -> None:
    """The Evidently report is expensive: it needs a configured token and is rate-limited per process."""
    s = parts.settings
    if s.read_token is None and s.api_token is None:
        raise Forbidden("the report endpoint needs a token: set read_token or api_token")
    given = bearer(request)
    if not (_is(given, s.read_token) or _is(given, s.api_token)):
        raise Unauthorized("a valid bearer token (read_token or api_token) is required for reports")
    wait = parts.report_limit.take() if parts.report_limit is not None else 0.0
    if wait > 0:
        raise TooManyRequests(f"over report_rate_per_minute={s.report_rate_per_minute:g}", retry_after=wait)


WriteAccess = Depends(require_write)
ReadAccess = Depends(require_read)
ReportAccess = Depends(require_report)
IngestIdentity = Annotated[str | None, Depends(ingest_identity)]
require_token = require_write  # the name earlier code used


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused early with 413 when it is over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is {declared} bytes, over the {limit}-byte limit")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
