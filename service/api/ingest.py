"""``POST /v1/ingest``: envelopes from sidecars over HTTP, merged exactly once.

Decoding and the store transaction run in worker threads, never in the event loop, so a large
envelope cannot stall ``/healthz`` or other requests; at most :data:`DECODE_SLOTS` envelopes decode
at once per process, which bounds the memory decoding can take.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from driftline.errors import WireFormatError
from driftline.wire import Envelope, decode_envelope

from ..errors import BadRequest, ServiceError
from .deps import PartsDep, WriteAccess, read_body

__all__ = ["DECODE_SLOTS", "decode_off_loop", "router"]

router = APIRouter(prefix="/v1", tags=["ingest"])
DECODE_SLOTS = 2


def _limiter(request: Request) -> anyio.CapacityLimiter:
    state = request.app.state
    if getattr(state, "decode_limiter", None) is None:
        state.decode_limiter = anyio.CapacityLimiter(DECODE_SLOTS)
    return state.decode_limiter  # type: ignore[no-any-return]


async def decode_off_loop(request: Request, body: bytes, limit: int, *, instant_ok: bool = False) -> Envelope:
    """Decode in a worker thread (at most DECODE_SLOTS at once); raises WireFormatError."""
    return await anyio.to_thread.run_sync(lambda: decode_envelope(body, max_bytes=limit, instant_ok=instant_ok),
                                          limiter=_limiter(request))


@router.post("/ingest", dependencies=[WriteAccess],
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def ingest(request: Request, parts: PartsDep) -> dict[str, Any]:
    """Accept one binary envelope (see docs/wire-format.md); a known envelope id is a no-op.

    A defective envelope is 400 and one that can never be stored 422: both are permanent, and a
    sender must not retry them; only 503 (the store is unavailable) is worth retrying.
    """
    limit = parts.settings.max_body_bytes
    body = await read_body(request, limit)
    try:
        env = await decode_off_loop(request, body, limit)
    except WireFormatError as exc:
        parts.stats.record("http", "rejected", len(body))
        raise BadRequest("malformed envelope", str(exc)) from None
    try:
        res = await run_in_threadpool(parts.store.ingest, env, "http", raw=body)
    except ServiceError as exc:
        if not exc.retriable:
            parts.stats.record("http", "rejected", len(body))
        raise
    parts.stats.record("http", res.result, len(body), env.profiles, env.producer)
    return {"envelope_id": res.envelope_id, "result": res.result, "windows": res.windows}
