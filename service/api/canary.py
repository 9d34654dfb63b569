"""Canary experiments and the gates progressive-delivery tools call (Flagger webhooks, Argo Rollouts).

Every rollout is its own experiment, named from what its controller sends: Flagger's webhook payload
(``namespace/name`` and the ``checksum`` of the canary's revision) or Argo Rollouts' analysis args in
the query (``rollout``, for example the canary's pod-template hash). The first call of a new rollout
starts its experiment from the model's defaults; a call with no identity (a person, a script) uses
the experiment that ``PUT .../canary`` started. Gates answer 200 to go on and 412 to halt.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from driftline.stats import CanaryConfig

from ..errors import BadRequest
from ..evaluation import Evaluator, RolloutRef, canary_config_dict
from ..results import CanaryState
from .deps import PartsDep, ReadAccess, WriteAccess

__all__ = ["FlaggerPayload", "canary_answer", "router"]

router = APIRouter(prefix="/v1/models", tags=["canary"])
experiments_router = APIRouter(prefix="/v1/canary", tags=["canary"])

EXAMPLE = {"baseline_version": "v1", "canary_version": "v2", "min_rows": 1000, "min_duration_seconds": 300}
API_ROLLOUT = "api"  # the experiment PUT starts and identity-less gate calls use
_ROLLOUT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,254}$")
_Name = Annotated[str, Field(max_length=253)]


class FlaggerPayload(BaseModel):
    """The body Flagger POSTs to every webhook (``flaggerv1.CanaryWebhookPayload``)."""

    model_config = ConfigDict(extra="ignore")

    name: _Name = ""
    namespace: _Name = ""
    phase: Annotated[str, Field(max_length=64)] = ""
    checksum: Annotated[str, Field(max_length=128)] = ""
    metadata: Annotated[dict[Annotated[str, Field(max_length=253)], Annotated[str, Field(max_length=1024)]] | None,
                        Field(max_length=64)] = None


def _checked(rollout: str) -> str:
    if not _ROLLOUT.match(rollout):
        raise BadRequest(f"invalid rollout identity {rollout[:80]!r}: 1-255 of A-Z a-z 0-9 . _ : / @ + = -")
    return rollout


def flagger_ref(body: FlaggerPayload | None) -> RolloutRef:
    """The rollout a Flagger webhook call belongs to: ``flagger:<namespace>/<name>@<checksum>``.

    Flagger's checksum hashes the canary's last applied spec and tracked configs, so it changes with
    every new revision: each revision is a new experiment. Metadata may name the two versions
    (``baseline_version``, ``canary_version``) or give the rollout identity itself (``rollout``).
    """
    meta = (body.metadata or {}) if body is not None else {}
    if body is None or not (body.name or meta.get("rollout")):
        return RolloutRef("api", API_ROLLOUT)
    rollout = meta.get("rollout") or f"flagger:{body.namespace or 'default'}/{body.name}@{body.checksum or '-'}"
    return RolloutRef("flagger", _checked(rollout), body.phase, meta.get("baseline_version") or None,
                      meta.get("canary_version") or None)


def _result(parts: Any, model: str, ref: RolloutRef, gate: str) -> dict[str, Any]:
    return parts.evaluator.canary_gate(model, ref, gate).to_dict()  # type: ignore[no-any-return]


def canary_answer(evaluator: Evaluator, state: CanaryState) -> dict[str, Any]:
    """The JSON of one experiment's verdict with its gate-call history (the canary endpoints, the model page)."""
    return {**state.to_dict(), "history": evaluator.canary_history(state)}


def _gate(ok: bool, res: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"verdict": res["verdict"], "reasons": res["reasons"], "rows": res["rows"],
                         "rollout": res["rollout"], "status": res["status"]},
                        status_code=200 if ok else 412)


@router.put("/{model}/canary", dependencies=[WriteAccess])
def put_canary(parts: PartsDep, model: str, body: CanaryConfig = Body(..., examples=[EXAMPLE])) -> dict[str, Any]:
    """Set the model's canary defaults (every new rollout starts from them) and (re)start the ``api`` experiment.

    The body is validated whole before anything is stored: a bad field answers 422 and changes nothing.
    """
    raw = canary_config_dict(body)
    parts.store.put_canary(model, raw)
    parts.evaluator.start_experiment(model, RolloutRef("api", API_ROLLOUT), replace=True, config=body)
    return canary_answer(parts.evaluator, parts.evaluator.canary(model, API_ROLLOUT))


@router.get("/{model}/canary", dependencies=[ReadAccess])
def get_canary(parts: PartsDep, model: str,
               rollout: Annotated[str | None, Query(max_length=255)] = None) -> dict[str, Any]:
    """One experiment's verdict (``continue``, ``promote``, ``rollback`` or ``inconclusive``), reasons,
    rows per arm, comparisons and gate-call history: the model's newest experiment unless ``rollout`` names one."""
    return canary_answer(parts.evaluator, parts.evaluator.canary(model, rollout))


@router.get("/{model}/canary/experiments", dependencies=[ReadAccess])
def list_model_experiments(parts: PartsDep, model: str) -> list[dict[str, Any]]:
    """The model's experiments, newest first, each with its status and gate-call history."""
    return parts.evaluator.experiments(model)  # type: ignore[no-any-return]


@experiments_router.get("/experiments", dependencies=[ReadAccess])
def list_experiments(parts: PartsDep) -> list[dict[str, Any]]:
    """Every model's experiments, newest first."""
    return parts.evaluator.experiments()  # type: ignore[no-any-return]


@router.delete("/{model}/canary", dependencies=[WriteAccess])
def delete_canary(parts: PartsDep, model: str) -> dict[str, Any]:
    """Forget the model's canary defaults and experiments."""
    deleted = parts.store.delete_canary(model)
    parts.evaluator.forget_canary(model)
    return {"model": model, "deleted": deleted}


_Payload = Annotated[FlaggerPayload | None, Body()]


@router.post("/{model}/canary/gate/check", dependencies=[ReadAccess])
def gate_check(parts: PartsDep, model: str, body: _Payload = None) -> JSONResponse:
    """Flagger ``pre-rollout`` and ``rollout`` webhooks: 200 to go on; 412 (a failed check) on rollback or
    inconclusive. The first call of a rollout starts its experiment."""
    res = _result(parts, model, flagger_ref(body), "check")
    return _gate(res["verdict"] not in ("rollback", "inconclusive"), res)


@router.post("/{model}/canary/gate/promote", dependencies=[ReadAccess])
def gate_promote(parts: PartsDep, model: str, body: _Payload = None) -> JSONResponse:
    """Flagger ``confirm-promotion`` webhook: 200 only when the verdict is promote (412 keeps Flagger waiting)."""
    res = _result(parts, model, flagger_ref(body), "promote")
    return _gate(res["verdict"] == "promote", res)


@router.post("/{model}/canary/gate/rollback", dependencies=[ReadAccess])
def gate_rollback(parts: PartsDep, model: str, body: _Payload = None) -> JSONResponse:
    """Flagger ``rollback`` webhook: 200 (roll back now) when the verdict is rollback, else 412."""
    res = _result(parts, model, flagger_ref(body), "rollback")
    return _gate(res["verdict"] == "rollback", res)


@router.get("/{model}/canary/argo", dependencies=[ReadAccess])
def argo_metric(parts: PartsDep, model: str,
                rollout: Annotated[str | None, Query(max_length=255)] = None,
                baseline_version: Annotated[str | None, Query(max_length=128)] = None,
                canary_version: Annotated[str | None, Query(max_length=128)] = None) -> dict[str, Any]:
    """Argo Rollouts ``web`` metric provider: flat JSON for ``successCondition``/``failureCondition``.

    ``rollout`` (the canary's pod-template hash in the example template) names the experiment; the
    versions, when given (empty means not given), override the model's defaults for a new one.
    """
    ref = (RolloutRef("argo", _checked(f"argo:{rollout}"), "", baseline_version or None, canary_version or None)
           if rollout else RolloutRef("api", API_ROLLOUT))
    res = _result(parts, model, ref, "argo")
    return {"verdict": res["verdict"], "promote": res["verdict"] == "promote",
            "rollback": res["verdict"] == "rollback", "inconclusive": res["verdict"] == "inconclusive",
            "baseline_rows": res["rows"]["baseline"], "canary_rows": res["rows"]["canary"],
            "rollout": res["rollout"], "reasons": res["reasons"]}
