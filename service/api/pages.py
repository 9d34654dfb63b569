"""Health, readiness, metrics and the status page."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ...promtext import render_text
from ..conformance import conformance_summary
from ..errors import NotFound, ServiceError
from ..status import render_index, render_model
from .canary import canary_answer
from .deps import PartsDep, ReadAccess

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz(parts: PartsDep) -> JSONResponse:
    """Liveness: the process answers, and store writes have not failed for ``liveness_store_failure_seconds``.

    A process whose store stays broken (a lost pool, a full disk) is better restarted than kept.
    """
    health = parts.store.health
    failing = health.failing_for()
    if failing >= parts.settings.liveness_store_failure_seconds:
        return JSONResponse({"status": "failing", "store_failing_seconds": round(failing, 1),
                             "error": health.last_error}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/readyz", response_model=None)
def readyz(parts: PartsDep, request: Request) -> dict[str, Any] | JSONResponse:
    """Readiness: the store takes a write (this process's heartbeat row, not only ``SELECT 1``) and,
    with Kafka enabled, the consumer is consuming."""
    parts.store.probe_write()
    out: dict[str, Any] = {"status": "ready", "store": parts.store.engine}
    consumer = getattr(request.app.state, "consumer", None)
    if consumer is not None:
        snap = consumer.snapshot()
        out["kafka"] = "consuming" if snap["up"] else "not consuming"
        if not snap["up"]:
            out.update(status="not ready", kafka_error=snap["last_error"])
            return JSONResponse(out, status_code=503)
    return out


@router.get("/metrics", response_class=Response)
def metrics(parts: PartsDep) -> Response:
    """Prometheus exposition, read from current state at scrape time."""
    return Response(render_text(parts.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", response_class=HTMLResponse, include_in_schema=False, dependencies=[ReadAccess])
def index(parts: PartsDep) -> HTMLResponse:
    models = parts.store.models()
    snap = parts.evaluator.snapshot()
    for m in models:
        newest = snap.newest_drift(m["name"])
        m["drift"] = newest.to_dict() if newest is not None else None
        cs = snap.canaries.get(m["name"])
        m["canary"] = cs.to_dict() if cs is not None else None
    return HTMLResponse(render_index(models))


@router.get("/models/{model}", response_class=HTMLResponse, include_in_schema=False, dependencies=[ReadAccess])
def model_page(parts: PartsDep, model: str, version: str | None = None) -> HTMLResponse:
    ev = parts.evaluator
    versions = ev.versions(model)
    if version is None and versions:
        version = ev.default_version(model)
    problem = None
    try:
        if version is None:
            raise NotFound(f"no data and no reference for model {model!r}",
                           "point a sidecar at this service or upload a reference with `driftline reference upload`")
        drift = ev.drift(model, version).to_dict()
        history = ev.history(model, version)
        devices = ev.devices(model, version)
    except NotFound as exc:
        drift, history, devices = None, [], []
        problem = (exc.message, str(exc.detail or ""))
    try:
        canary = canary_answer(ev, ev.canary(model))
    except ServiceError:
        canary = None
    try:
        shadow = parts.shadow.evaluate(model).to_dict() if parts.shadow is not None else None
    except ServiceError:
        shadow = None
    conformance = None
    if parts.conformance is not None:
        try:
            conformance = conformance_summary(parts.conformance, model, parts.settings.conformance_cohorts)
        except Exception:  # noqa: BLE001 - a store hiccup hides this section, not the page
            conformance = None
    mv = parts.multivariate.snapshot().get((model, version)) if parts.multivariate is not None else None
    return HTMLResponse(render_model(model, drift, history, canary, devices, version=version, versions=versions,
                                     problem=problem, experiments=ev.experiments(model),
                                     extra=_estimate_card(parts, model, version),
                                     multivariate=mv.to_dict() if mv is not None else None,
                                     conformance=conformance, shadow=shadow))


def _estimate_card(parts: Any, model: str, version: str | None) -> str:
    """The label-free performance estimate's card, when the version's reference has a calibration."""
    from ..estimate import render_estimates

    if parts.estimates is None or version is None:
        return ""
    return render_estimates(parts.estimates.snapshot().get((model, version)))
