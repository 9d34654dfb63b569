"""Retraining requests: one policy, a durable outbox in the service store, signed deliveries.

- :mod:`.policy`: when to retrain (the same policy as the ``DriftlineRetrainModel`` alert rule).
- :mod:`.triggers`: the Alertmanager path and the embedded path, both through that policy.
- :mod:`.outbox`: requests committed before any attempt; cooldown and de-duplication in SQL.
- :mod:`.dispatcher`: the sender thread (exponential backoff with jitter, a deadline, counters).
- :mod:`.templates`: payloads for webhooks, Argo Events, Argo Workflows, GitHub repository_dispatch,
  signed with ``X-Driftline-Signature: sha256=HMAC(secret, timestamp + "." + body)``.
- :mod:`.request`: what a request says (drifted features with scores, the reference in use).
"""

from __future__ import annotations

from .dispatcher import RESULTS, Dispatcher
from .outbox import Outbox
from .policy import RetrainPolicy
from .request import build_request, drift_details
from .templates import render_payload, sign
from .triggers import AlertView, from_alerts, from_evaluations

__all__ = ["RESULTS", "AlertView", "Dispatcher", "Outbox", "RetrainPolicy", "build_request", "drift_details",
           "from_alerts", "from_evaluations", "render_payload", "sign"]
