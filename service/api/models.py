"""Models, references and drift: ``/v1/models/...``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from driftline.errors import WireFormatError
from driftline.profile import merge_all

from ..errors import BadRequest, NotFound
from ..reports import render_evidently_report
from .deps import PartsDep, ReadAccess, ReportAccess, WriteAccess, read_body
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
