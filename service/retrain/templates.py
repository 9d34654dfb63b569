"""What a retraining request looks like on the wire: payload templates per target kind, and signing.

Every kind carries the same request (model, version, drifted features with scores, the reference in
use, the idempotency key), shaped for the receiver:

- ``webhook``: the request itself, as JSON.
- ``argo_events``: ``{"type", "source", "id", "data": request}`` for an Argo Events webhook event
  source; sensors read ``body.data.model`` and so on.
- ``argo_workflows``: the body of Argo Server's ``POST /api/v1/workflows/{namespace}/submit``, which
  submits the target's WorkflowTemplate with parameters ``model``, ``version``, ``idempotency_key``
  and ``request`` (the whole request as JSON).
- ``github_dispatch``: the body of GitHub's ``POST /repos/{owner}/{repo}/dispatches``
  (``event_type`` plus the request as ``client_payload``, which GitHub limits to 10 top-level keys).

Signature: ``X-Driftline-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`` with the
Unix time in ``X-Driftline-Timestamp``; receivers recompute it over the raw body and should refuse
timestamps far from their clock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

__all__ = ["EVENT_TYPE", "KINDS", "headers", "render_payload", "sign"]

EVENT_TYPE = "driftline-retrain"
KINDS = ("webhook", "argo_events", "argo_workflows", "github_dispatch")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Driftline-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def render_payload(target: Any, request: dict[str, Any]) -> dict[str, Any]:
    """The JSON document sent to ``target`` (a ``RetrainTarget``) for ``request``."""
    kind = getattr(target, "kind", "webhook")
    if kind == "github_dispatch":
        return {"event_type": EVENT_TYPE, "client_payload": request}
    if kind == "argo_workflows":
        return {
            "resourceKind": "WorkflowTemplate",
            "resourceName": getattr(target, "workflow_template", None) or EVENT_TYPE,
            "submitOptions": {
                "generateName": "driftline-retrain-",
                "parameters": [
                    f"model={request['model']}",
                    f"version={request['version']}",
                    f"idempotency_key={request['idempotency_key']}",
                    f"request={json.dumps(request, sort_keys=True)}",
                ],
            },
        }
    if kind == "argo_events":
        return {"type": "driftline.retrain", "source": "driftline", "id": request["idempotency_key"],
                "data": request}
    return request


def headers(target: Any, body: bytes, secret: str, timestamp: str, idempotency_key: str) -> dict[str, str]:
    """Signed headers for one attempt; a target's token goes in ``Authorization: Bearer``."""
    out = {
        "Content-Type": "application/json",
        "User-Agent": "driftline-retrain",
        "X-Driftline-Timestamp": timestamp,
        "X-Driftline-Signature": sign(secret, timestamp, body),
        "Idempotency-Key": idempotency_key,
    }
    if getattr(target, "kind", "webhook") == "github_dispatch":
        out["Accept"] = "application/vnd.github+json"
        out["X-GitHub-Api-Version"] = "2022-11-28"
    token = getattr(target, "token", None)
    if token is not None:
        out["Authorization"] = f"Bearer {token.get_secret_value()}"
    return out
