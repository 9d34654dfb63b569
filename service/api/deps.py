"""What every route needs: the running service's parts, and the bearer-token check for writes."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from ..errors import PayloadTooLarge, Unauthorized
from ..evaluation import Evaluator
from ..metrics import IngestStats
from ..retrain import Dispatcher
from ..settings import ServiceSettings
from ..store import Store

__all__ = ["Parts", "PartsDep", "WriteAccess", "read_body"]


@dataclass
class Parts:
    """The service's parts, built once per app by the factory."""

    settings: ServiceSettings
    store: Store
    evaluator: Evaluator
    stats: IngestStats
    dispatcher: Dispatcher
    registry: Any = None
    fleet: Any = None  # fleet.Fleet: leadership and fleet state rebuilt from the store
    timings: Any = None  # observability.Timings: the duration histograms


def get_parts(request: Request) -> Parts:
    return request.app.state.parts  # type: ignore[no-any-return]


PartsDep = Annotated[Parts, Depends(get_parts)]


def require_token(request: Request, parts: PartsDep) -> None:
    token = parts.settings.api_token
    if token is None:
        return
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise Unauthorized("a valid bearer token is required for this endpoint")


WriteAccess = Depends(require_token)


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
