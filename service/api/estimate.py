"""The label-free performance estimate: ``GET /v1/models/{model}/estimate`` (a read of the newest snapshot)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..errors import NotFound
from .deps import PartsDep, ReadAccess

__all__ = ["router"]

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("/{model}/estimate", dependencies=[ReadAccess])
def estimate(parts: PartsDep, model: str, version: str | None = None) -> dict[str, Any]:
    """Estimated accuracy, precision, recall, F1 and ROC AUC with error bands, for all rows and per cohort.

    Computed by the background pass over the current window for versions whose reference carries a
    score calibration (``driftline reference build --label``); no labels are needed.
    """
    snap = parts.estimates.snapshot() if parts.estimates is not None else {}
    versions = sorted(v for m, v in snap if m == model)
    if not versions:
        raise NotFound(f"no performance estimate for model {model!r}",
                       "upload a reference built with `driftline reference build --label COL` and send windows")
    chosen = version if version is not None else max(
        versions, key=lambda v: max((ce.until for ce in snap[(model, v)]), default=0.0))
    found = snap.get((model, chosen))
    if found is None:
        raise NotFound(f"no performance estimate for model {model!r} version {chosen!r}",
                       f"versions with an estimate: {', '.join(versions)}")
    return {"model": model, "version": chosen, "since": found[0].since, "until": found[0].until,
            "estimates": [ce.to_dict() for ce in found]}
