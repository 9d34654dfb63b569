"""``POST /v1/alertmanager``: Alertmanager's webhook receiver, turning retraining alerts into requests.

Accepts the webhook payload (version 4). Firing alerts labelled ``driftline_action=retrain`` become
retraining requests through the retraining policy (one per drift episode, per-model cooldown);
everything else, resolved notifications included, is acknowledged and ignored. The answer is 200
once the requests are committed to the outbox, so Alertmanager does not retry what is stored.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from ..errors import BadRequest
from ..retrain import AlertView, from_alerts
from .deps import PartsDep, WriteAccess, read_body

__all__ = ["WebhookAlert", "WebhookPayload", "router"]

log = logging.getLogger("driftline.service.retrain")

router = APIRouter(prefix="/v1", tags=["alerts"])


class WebhookAlert(BaseModel):
    """One alert of the webhook payload (the fields Driftline reads; others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    startsAt: str = ""  # noqa: N815 - Alertmanager's field names
    endsAt: str = ""  # noqa: N815
    generatorURL: str = ""  # noqa: N815
    fingerprint: str = ""


class WebhookPayload(BaseModel):
    """Alertmanager's webhook payload, version 4."""

    model_config = ConfigDict(extra="ignore")

    version: str = "4"
    status: Literal["firing", "resolved"] = "firing"
    receiver: str = ""
    groupKey: str = ""  # noqa: N815
    truncatedAlerts: int = Field(0, ge=0)  # noqa: N815
    alerts: list[WebhookAlert]


@router.post("/alertmanager", dependencies=[WriteAccess],
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": WebhookPayload.model_json_schema()}}}})
async def alertmanager(request: Request, parts: PartsDep) -> dict[str, Any]:
    """Queue one signed retraining request per firing retraining alert episode."""
    body = await read_body(request, parts.settings.max_body_bytes)
    try:
        payload = WebhookPayload.model_validate(json.loads(body))
    except (ValueError, RecursionError, ValidationError) as exc:  # JSONDecodeError is a ValueError
        detail = exc.errors(include_url=False, include_context=False) if isinstance(exc, ValidationError) else str(exc)
        raise BadRequest("not an Alertmanager webhook payload (version 4)", detail) from None
    if payload.truncatedAlerts:
        log.warning("Alertmanager truncated %d alert(s) of group %s; set max_alerts: 0 on the receiver",
                    payload.truncatedAlerts, payload.groupKey)
    alerts = [AlertView(a.status, a.labels, a.startsAt, a.fingerprint, a.generatorURL) for a in payload.alerts]
    return await run_in_threadpool(from_alerts, parts.dispatcher, parts.evaluator, alerts)
