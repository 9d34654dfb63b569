"""Models, references and drift: ``/v1/models/...``."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse

from driftline.errors import WireFormatError
from driftline.profile import merge_all
from driftline.wire import Envelope, encode_envelope

from ..errors import BadRequest, NotFound, Unauthorized
from ..reports import render_evidently_report
from .deps import PartsDep, ReadAccess, ReportAccess, WriteAccess, _is, bearer, read_body, require_read
from .ingest import decode_off_loop

__all__ = ["router"]

router = APIRouter(prefix="/v1/models", tags=["models"])

Since = Query(None, description="start of the range, epoch seconds (default: until minus the current window)")
Until = Query(None, description="end of the range, epoch seconds (default: now)")


@router.get("", dependencies=[ReadAccess])
def list_models(parts: PartsDep) -> dict[str, Any]:
    """Every model with its versions, variants, rows and newest window."""
    models = parts.store.models()
    refs = {(m, v): s for m, v, s in parts.store.references()}
    for m in models:
        m["references"] = {v: refs[(m["name"], v)] for v in m["versions"] if (m["name"], v) in refs}
    known = {m["name"] for m in models}
    for name in sorted({m for m, _v in refs} - known):  # a reference uploaded before any data arrived
        models.append({"name": name, "versions": [], "variants": [], "rows": 0, "windows": 0,
                       "first_window_start": None, "last_window_end": None, "streams": [],
                       "references": {v: s for (m, v), s in sorted(refs.items()) if m == name}})
    return {"models": models}


@router.get("/{model}/versions")
def list_versions(parts: PartsDep, model: str) -> dict[str, Any]:
    """Every version with data or a reference, newest data first; ``default`` is what drift shows unasked."""
    versions = parts.evaluator.versions(model)
    if not versions:
        raise NotFound(f"no data and no reference for model {model!r}")
    return {"model": model, "default": parts.evaluator.default_version(model), "versions": versions}


@router.get("/{model}/references")
def list_references(parts: PartsDep, model: str) -> dict[str, Any]:
    """The model's stored references: version, source, upload time, rows, features and outputs."""
    return {"model": model, "references": parts.store.reference_details(model)}


@router.put("/{model}/versions/{version}/reference", dependencies=[WriteAccess],
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def put_reference(model: str, version: str, request: Request, parts: PartsDep) -> dict[str, Any]:
    """Upload a reference profile (a file from ``driftline reference build``) for a model version."""
    body = await read_body(request, parts.settings.max_body_bytes * 16)
    try:
        env = await decode_off_loop(request, body, parts.settings.max_body_bytes * 16, instant_ok=True)
    except WireFormatError as exc:
        raise BadRequest("not a profile file", str(exc)) from None
    if not env.profiles:
        raise BadRequest("the profile file holds no profile")
    prof = merge_all(env.profiles)
    parts.store.put_reference(model, version, prof, "uploaded")
    return {"model": model, "version": version, "rows": prof.rows, "features": sorted(prof.features),
            "outputs": sorted(prof.outputs), "source": "uploaded"}


def require_reference_read(request: Request, parts: PartsDep) -> None:
    """A reference is read by people (read or write token) and by devices (any device token), who judge drift locally."""
    given = bearer(request)
    if any(_is(given, token) for token in parts.settings.device_tokens.values()):
        return
    try:
        require_read(request, parts)
    except Unauthorized:
        raise Unauthorized("a valid bearer token (read_token, api_token or a device token) is required") from None


REFERENCE_ENVELOPE_ID = "00000000-0000-0000-0000-000000000000"  # fixed, so equal references are equal bytes


@router.get("/{model}/versions/{version}/reference", dependencies=[Depends(require_reference_read)],
            response_class=Response, responses={
                200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                      "description": "the reference as a profile file, with an ETag"},
                304: {"description": "unchanged since the ETag given in If-None-Match"}})
def get_reference(model: str, version: str, request: Request, parts: PartsDep) -> Response:
    """The stored reference of a model version as a profile file; conditional on ``If-None-Match``.

    Sidecars fetch it to judge drift on the device and poll with the ETag, so an unchanged
    reference costs a 304 and no body.
    """
    found = parts.store.reference(model, version)
    if found is None:
        raise NotFound(f"no stored reference for model {model!r} version {version!r}",
                       f"upload one: PUT /v1/models/{model}/versions/{version}/reference")
    prof, source = found
    body = encode_envelope(Envelope([prof], producer={"name": "driftline-service", "reference_source": source},
                                    envelope_id=REFERENCE_ENVELOPE_ID, created_at=0.0))
    etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    wanted = [t.strip().removeprefix("W/") for t in request.headers.get("if-none-match", "").split(",")]
    if etag in wanted or "*" in wanted:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/octet-stream", headers=headers)


@router.get("/{model}/drift", dependencies=[ReadAccess])
def drift(parts: PartsDep, model: str, version: str | None = None, variant: str | None = None,
          since: float | None = Since, until: float | None = Until) -> dict[str, Any]:
    """Drift of the model's data over a time range against its reference (shape of ``driftline drift --json``)."""
    return parts.evaluator.drift(model, version, variant, since, until).to_dict()


@router.get("/{model}/drift/history", dependencies=[ReadAccess])
def drift_history(parts: PartsDep, model: str, version: str | None = None,
                  buckets: int = Query(24, ge=1, le=500), until: float | None = Until) -> dict[str, Any]:
    """Drift per time bucket (``evaluation.history_bucket_seconds``), oldest first."""
    return {"model": model, "history": parts.evaluator.history(model, version, buckets, until)}


@router.get("/{model}/devices", dependencies=[ReadAccess])
def devices(parts: PartsDep, model: str, version: str | None = None, since: float | None = Since,
            until: float | None = Until) -> dict[str, Any]:
    """Devices ranked by drift (share of drifted features, then the largest KS distance)."""
    return {"model": model, "devices": parts.evaluator.devices(model, version, since, until)}


@router.get("/{model}/report.html", response_class=HTMLResponse, dependencies=[ReportAccess])
def report(parts: PartsDep, model: str, version: str | None = None) -> HTMLResponse:
    """An Evidently data drift report from the raw-row reservoirs (needs a token; rate-limited: it is costly)."""
    version = version or parts.evaluator.default_version(model)
    since, until = parts.evaluator.window_range(None, None)
    rows = parts.store.windows(model, version, None, since, until)
    ref = parts.evaluator.reference_for(model, version, since, until)
    if ref is None:
        raise parts.evaluator.no_reference(model, version)
    if not rows:
        raise NotFound(f"no data for model {model!r} version {version!r} in the current window")
    current = merge_all(r.profile for r in rows)
    return HTMLResponse(render_evidently_report(ref[0], current))
