"""``POST /v1/alertmanager``: Alertmanager's webhook, turning retraining alerts into requests."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from ..errors import BadRequest, NotFound
from .deps import PartsDep, WriteAccess

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["alerts"])


@router.post("/alertmanager", dependencies=[WriteAccess])
def alertmanager(parts: PartsDep, payload: dict[str, Any] = Body(...)) -> dict[str, Any]:
    """Firing alerts labelled ``driftline_action=retrain`` queue one retraining request per episode."""
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise BadRequest("not an Alertmanager webhook payload: 'alerts' list missing")
    queued = ignored = 0
    for a in alerts:
        if not isinstance(a, dict):
            raise BadRequest("each alert must be an object")
        labels = a.get("labels") or {}
        if a.get("status") != "firing" or labels.get("driftline_action") != "retrain" or "model" not in labels:
            ignored += 1
            continue
        model = str(labels["model"])
        version = str(labels.get("version", ""))
        dedup = f"alert|{a.get('fingerprint', '')}|{a.get('startsAt', '')}|{model}|{version}"
        queued += parts.dispatcher.request(model, version, str(labels.get("alertname", "alert")), dedup,
                                           retrain_details(parts, model, version))
    return {"queued": queued, "ignored": ignored}


def retrain_details(parts: PartsDep, model: str, version: str) -> dict[str, Any]:
    """Drifted features with their scores and the reference in use, from the newest evaluation."""
    try:
        rep = parts.evaluator.drift(model, version or None)
    except (NotFound, BadRequest):
        return {"drifted_features": [], "reference": None}
    return {
        "drift_share": rep["drift_share"],
        "drifted_features": [{"name": f["name"], "method": f["method"], "effect": f["effect"],
                              "p_value": f["p_value"], "scores": f["scores"]}
                             for f in rep["features"] if f["drift_detected"]],
        "reference": {"model": model, "version": rep["version"], "source": rep["reference_source"]},
        "window": {"since": rep["since"], "until": rep["until"]},
    }
