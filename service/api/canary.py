"""Canary experiments and the gates progressive-delivery tools call (Flagger webhooks, Argo Rollouts)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse

from ..evaluation import canary_config_from_dict
from .deps import PartsDep, ReadAccess, WriteAccess

__all__ = ["router"]

router = APIRouter(prefix="/v1/models", tags=["canary"])

EXAMPLE = {"baseline_version": "v1", "canary_version": "v2", "min_rows": 1000, "min_duration_seconds": 300}


@router.put("/{model}/canary", dependencies=[WriteAccess])
def put_canary(parts: PartsDep, model: str,
               body: dict[str, Any] = Body(..., examples=[EXAMPLE])) -> dict[str, Any]:
    """Start (or replace) the canary experiment of a model; only the two versions are required."""
    canary_config_from_dict(body)  # validate before storing
    parts.store.put_canary(model, body)
    return parts.evaluator.canary(model)


@router.get("/{model}/canary", dependencies=[ReadAccess])
def get_canary(parts: PartsDep, model: str) -> dict[str, Any]:
    """The verdict (``continue``, ``promote`` or ``rollback``), reasons, rows per arm and comparisons."""
    return parts.evaluator.canary(model)


@router.delete("/{model}/canary", dependencies=[WriteAccess])
def delete_canary(parts: PartsDep, model: str) -> dict[str, Any]:
    """End the experiment."""
    return {"model": model, "deleted": parts.store.delete_canary(model)}


def _gate(ok: bool, res: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"verdict": res["verdict"], "reasons": res["reasons"], "rows": res["rows"]},
                        status_code=200 if ok else 412)


@router.post("/{model}/canary/gate/check", dependencies=[ReadAccess])
def gate_check(parts: PartsDep, model: str) -> JSONResponse:
    """Flagger rollout (pre-rollout / rollout) webhook: 200 to go on, 412 to halt when the verdict is rollback."""
    res = parts.evaluator.canary(model)
    return _gate(res["verdict"] != "rollback", res)


@router.post("/{model}/canary/gate/promote", dependencies=[ReadAccess])
def gate_promote(parts: PartsDep, model: str) -> JSONResponse:
    """Flagger confirm-promotion webhook: 200 only when the verdict is promote."""
    res = parts.evaluator.canary(model)
    return _gate(res["verdict"] == "promote", res)


@router.post("/{model}/canary/gate/rollback", dependencies=[ReadAccess])
def gate_rollback(parts: PartsDep, model: str) -> JSONResponse:
    """Flagger rollback webhook: 200 (roll back now) when the verdict is rollback, else 412."""
    res = parts.evaluator.canary(model)
    return _gate(res["verdict"] == "rollback", res)


@router.get("/{model}/canary/argo", dependencies=[ReadAccess])
def argo_metric(parts: PartsDep, model: str) -> dict[str, Any]:
    """Argo Rollouts ``web`` metric provider: flat JSON for ``successCondition``/``failureCondition``."""
    res = parts.evaluator.canary(model)
    return {"verdict": res["verdict"], "promote": res["verdict"] == "promote",
            "rollback": res["verdict"] == "rollback", "baseline_rows": res["rows"]["baseline"],
            "canary_rows": res["rows"]["canary"], "reasons": res["reasons"]}
