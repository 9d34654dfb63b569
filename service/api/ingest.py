"""``POST /v1/ingest``: envelopes from sidecars over HTTP, merged exactly once."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from driftline.errors import WireFormatError
from driftline.wire import decode_envelope

from ..errors import BadRequest, Forbidden, LimitExceeded
from ..observability import current_model
from .deps import IngestIdentity, PartsDep, check_device, read_body

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["ingest"])


@router.post("/ingest",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def ingest(request: Request, parts: PartsDep, device: IngestIdentity) -> dict[str, Any]:
    """Accept one binary envelope (see docs/wire-format.md); a known envelope id is a no-op.

    With a device token, every window must come from that device (``source``), else 403.
    """
    limit = parts.settings.max_body_bytes
    body = await read_body(request, limit)
    try:
        env = decode_envelope(body, max_bytes=limit)
    except WireFormatError as exc:
        parts.stats.record("http", "rejected", len(body))
        raise BadRequest("malformed envelope", str(exc)) from None
    try:
        check_device(device, (p.key.source for p in env.profiles))
    except Forbidden:
        parts.stats.record("http", "forbidden", len(body))
        raise
    if env.profiles:
        current_model.set(env.profiles[0].key.model)  # for this request's log lines
    with parts.timings.ingest_batch("http"):
        res = parts.store.ingest(env, "http", raw=body)
    parts.stats.record("http", res.result, len(body), env.profiles, env.producer)
    if res.result == "limited":
        raise LimitExceeded(res.reason or "a configured limit was reached")
    return {"envelope_id": res.envelope_id, "result": res.result, "windows": res.windows}
