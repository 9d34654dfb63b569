"""The content of a retraining request: what drifted, by how much, against which reference.

Taken from the service's drift evaluation (the newest background result when there is one, so a
webhook never waits for statistics). GitHub's ``client_payload`` allows 10 top-level keys, so the
request keeps to 9 and caps the feature list (the most drifted first; ``drift.drifted`` is the
full count).
"""

from __future__ import annotations

from typing import Any

from ..errors import BadRequest, NotFound
from ..evaluation import Evaluator
from ..results import DriftResult

__all__ = ["MAX_FEATURES", "build_request", "drift_details"]

MAX_FEATURES = 50


def _report(evaluator: Evaluator, model: str, version: str) -> DriftResult | None:
    cached = evaluator.snapshot().drift(model, version) if version else None
    if cached is not None:
        return cached
    try:
        return evaluator.drift(model, version or None)
    except (NotFound, BadRequest):
        return None


def drift_details(evaluator: Evaluator, model: str, version: str) -> dict[str, Any]:
    """``drift``, ``drifted_features`` and ``reference`` for a request about ``model`` ``version``."""
    res = _report(evaluator, model, version)
    if res is None:
        return {"drift": None, "drifted_features": [], "reference": None}
    rep = res.report
    drifted = [f.to_dict() for f in rep.features if f.drift_detected]  # the JSON a webhook carries
    drifted.sort(key=lambda f: (-(f["effect"] or 0.0), f["name"]))
    features = [{"name": f["name"], "type": f["type"], "method": f["method"], "effect": f["effect"],
                 "threshold": f["threshold"], "p_value": f["p_value"], "critical": bool(f["critical"]),
                 "scores": f["scores"]} for f in drifted[:MAX_FEATURES]]
    return {
        "drift": {"dataset_drift": rep.dataset_drift, "drift_share": rep.shown_share,
                  "drifted": len(drifted), "features": len(rep.features),
                  "since": res.since, "until": res.until,
                  "current_rows": rep.current_rows, "reference_rows": rep.reference_rows},
        "drifted_features": features,
        "reference": {"model": model, "version": res.version, "source": res.reference_source,
                      "rows": rep.reference_rows},
    }


def build_request(key: str, model: str, version: str, reason: str, trigger: dict[str, Any], now: float,
                  details: dict[str, Any]) -> dict[str, Any]:
    """The request every template carries (9 top-level keys)."""
    return {"idempotency_key": key, "model": model, "version": version, "reason": reason, "trigger": trigger,
            "requested_at": now, **details}
