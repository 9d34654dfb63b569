"""``POST /v1/ingest``: envelopes from sidecars over HTTP, merged exactly once through :mod:`..ingest`.

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

from ..errors import BadRequest, Forbidden, LimitExceeded, ServiceError
from ..ingest import Ingest, refusal
from ..observability import current_model
from .deps import IngestIdentity, PartsDep, check_device, read_body

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


@router.post("/ingest",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def ingest(request: Request, parts: PartsDep, device: IngestIdentity) -> dict[str, Any]:
    """Accept one binary envelope (see docs/wire-format.md); a known envelope id is a no-op.

    With a device token, every window must come from that device (``source``), else 403. A
    defective envelope is 400 and one that can never be stored 422: both are permanent, and a
    sender must not retry them; only 503 (the store is unavailable) is worth retrying.
    """
    path = Ingest(parts, "http")
    limit = parts.settings.max_body_bytes
    body = await read_body(request, limit)
    try:
        env = await anyio.to_thread.run_sync(path.decode, body, limiter=_limiter(request))
    except WireFormatError as exc:
        path.refused(len(body), "rejected")
        raise BadRequest("malformed envelope", str(exc)) from None
    try:
        check_device(device, (p.key.source for p in env.profiles))
    except Forbidden:
        path.refused(len(body), "forbidden")
        raise
    if env.profiles:
        current_model.set(env.profiles[0].key.model)  # for this request's log lines
    try:
        (res,) = await run_in_threadpool(path.store, [(env, body)])
    except ServiceError as exc:
        if refusal(exc) is not None:  # permanent: refused and counted; a retriable one is the sender's to retry
            path.refused(len(body), "rejected")
        raise
    if res.result == "limited":
        raise LimitExceeded(res.reason or "a configured limit was reached")
    return {"envelope_id": res.envelope_id, "result": res.result, "windows": res.windows}
