"""Multivariate drift: the reconstruction model, its verdicts, and the domain-classifier drill-down.

- ``GET /v1/models/{m}/versions/{v}/reconstruction``: the reference's reconstruction model bytes
  (``docs/statistics.md``), versioned by its digest (``X-Driftline-Model-Digest``), conditional on
  ``If-None-Match`` like the reference itself; readable by devices;
- ``GET /v1/models/{m}/versions/{v}/drift/multivariate``: mean reconstruction error over a range
  against the reference's band, and the verdict of each stored window;
- ``GET /v1/models/{m}/versions/{v}/drift/domain-classifier``: a classifier trained on the raw-row
  reservoirs names the features that separate reference from current (costly: a token and the
  report rate limit, like the Evidently report; needs the ``drilldown`` extra).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from driftline.profile import merge_all

from ..domain_classifier import domain_classifier
from ..errors import BadRequest, NotFound
from ..multivariate import MultivariateMonitor
from .deps import PartsDep, ReadAccess, ReportAccess
from .models import Since, Until, require_reference_read

__all__ = ["router"]

router = APIRouter(prefix="/v1/models", tags=["models"])


def _monitor(parts: Any) -> MultivariateMonitor:
    mon = getattr(parts, "multivariate", None)
    return mon if mon is not None else MultivariateMonitor(parts.evaluator)


@router.get("/{model}/versions/{version}/reconstruction", dependencies=[Depends(require_reference_read)],
            response_class=Response, responses={
                200: {"content": {"application/msgpack": {"schema": {"type": "string", "format": "binary"}}},
                      "description": "the reconstruction model, with an ETag and its digest"},
                304: {"description": "unchanged since the ETag given in If-None-Match"}})
def get_reconstruction(model: str, version: str, request: Request, parts: PartsDep) -> Response:
    """The reconstruction model stored with the reference (``reference build --reconstruction``)."""
    found = parts.store.reference(model, version)
    sk = found[0].reconstruction if found is not None else None
    if sk is None or sk.model is None:
        raise NotFound(f"no reconstruction model for model {model!r} version {version!r}",
                       "build the reference with: driftline reference build DATA --reconstruction ...")
    etag = f'"{sk.digest}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Driftline-Model-Digest": sk.digest}
    wanted = [t.strip().removeprefix("W/") for t in request.headers.get("if-none-match", "").split(",")]
    if etag in wanted or "*" in wanted:
        return Response(status_code=304, headers=headers)
    return Response(sk.model, media_type="application/msgpack", headers=headers)


@router.get("/{model}/versions/{version}/drift/multivariate", dependencies=[ReadAccess])
def multivariate(parts: PartsDep, model: str, version: str, since: float | None = Since,
                 until: float | None = Until) -> dict[str, Any]:
    """Reconstruction-error drift of a model version over a range, and per stored window (newest 50)."""
    return _monitor(parts).evaluate(model, version, since, until).to_dict()


@router.get("/{model}/versions/{version}/drift/domain-classifier", dependencies=[ReportAccess])
def domain(parts: PartsDep, model: str, version: str, since: float | None = Since,
           until: float | None = Until) -> dict[str, Any]:
    """Which features separate the reference's raw rows from the current range's (a trained classifier)."""
    ev = parts.evaluator
    since, until = ev.window_range(since, until)
    ref = ev.reference_for(model, version, since, until)
    if ref is None:
        raise ev.no_reference(model, version)
    rows = [r for r in parts.store.windows(model, version, None, since, until) if r.profile.key.variant != "canary"]
    if not rows:
        raise NotFound(f"no data for model {model!r} version {version!r} in the range")
    current = merge_all(r.profile for r in rows)
    if ref[0].reservoir is None or current.reservoir is None:
        raise BadRequest("the reference or the current windows keep no raw-row sample",
                         "build the reference with --reservoir N and set the sidecar's profile.reservoir_size")
    out = domain_classifier(ref[0].reservoir.rows, current.reservoir.rows)
    return {"model": model, "version": version, "since": since, "until": until, "reference_source": ref[1],
            **out.to_dict()}
