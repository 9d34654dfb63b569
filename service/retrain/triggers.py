"""The two ways a retraining starts, both through the one :class:`RetrainPolicy`.

- :func:`from_alerts`: Alertmanager posted alerts (webhook payload v4); each firing alert labelled
  ``driftline_action=retrain`` is one episode, identified by its fingerprint and ``startsAt``.
- :func:`from_evaluations`: the service's own background evaluation (the embedded default, no
  Alertmanager); an unbroken run of dataset drift is one episode, identified by its start.

Both end in :meth:`Dispatcher.request`, which applies the per-episode de-duplication and the per-model
cooldown in the store, so running both paths at once still starts one retraining.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..evaluation import Evaluator
from ..results import ModelState
from .dispatcher import Dispatcher
from .request import drift_details

__all__ = ["AlertView", "from_alerts", "from_evaluations"]


@dataclass(frozen=True)
class AlertView:
    """The parts of one Alertmanager alert the policy needs."""

    status: str
    labels: Mapping[str, str]
    starts_at: str = ""
    fingerprint: str = ""
    generator_url: str = ""


def from_alerts(dispatcher: Dispatcher, evaluator: Evaluator, alerts: Sequence[AlertView]) -> dict[str, int]:
    """Queue a request for every firing retraining alert; returns counts for the webhook's answer."""
    policy = dispatcher.policy
    queued = ignored = 0
    for a in alerts:
        if not policy.wants_alert(a.status, a.labels) or not evaluator.store.catalog.known_model(a.labels["model"]):
            ignored += 1  # not for retraining, or a model no window ever came from: O(1), no database
            continue
        model, version = a.labels["model"], a.labels.get("version", "")
        alertname = a.labels.get("alertname", "alert")
        trigger = {"source": "alertmanager", "alertname": alertname, "fingerprint": a.fingerprint,
                   "starts_at": a.starts_at, "generator_url": a.generator_url}
        queued += dispatcher.request(model, version, alertname,
                                     policy.alert_episode(a.fingerprint, a.starts_at, model, version),
                                     drift_details(evaluator, model, version), trigger)
    return {"received": len(alerts), "queued": queued, "ignored": ignored}


def from_evaluations(dispatcher: Dispatcher, evaluator: Evaluator, states: Iterable[ModelState],
                     now: float) -> int:
    """Apply the policy to the newest evaluations; returns how many requests were queued."""
    policy = dispatcher.policy
    queued = 0
    for st in states:
        since = st.drift_since
        if since is None or not policy.should_retrain(since, now):
            continue
        episode = policy.internal_episode(st.model, st.version, since)
        if not dispatcher.first_sight(episode):  # every later pass of the same episode: nothing to do
            continue
        trigger: dict[str, Any] = {"source": "service", "drift_since": since,
                                   "sustained_seconds": policy.sustained_seconds}
        try:  # one model's failure never keeps another from being requested
            queued += dispatcher.request(st.model, st.version, "dataset drift persisted", episode,
                                         drift_details(evaluator, st.model, st.version), trigger, now)
        except Exception as exc:
            dispatcher.forget(episode)  # try again on the next pass
            evaluator.failed("retrain", f"{st.model} {st.version}", exc)
            continue
        evaluator.succeeded("retrain", f"{st.model} {st.version}")
    return queued
