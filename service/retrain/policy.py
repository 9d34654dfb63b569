"""The retraining policy: one definition for the Alertmanager path and the service's embedded path.

Retrain a model version when dataset drift (``driftline_dataset_drift == 1``) has held without a break
for ``sustained_seconds``; start at most one retraining per drift episode, and at most one per model
per ``cooldown_seconds``. The Prometheus rule ``DriftlineRetrainModel`` in ``alerts/`` is this policy
written in PromQL (:meth:`RetrainPolicy.promql` and :meth:`RetrainPolicy.rule_for`); a test compares
the rule file with it, so both paths retrain on the same evidence.

Pure: no clock, no I/O. Callers pass ``now`` and what they know about the episode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ACTION_LABEL", "ACTION_VALUE", "RULE_NAME", "RetrainPolicy", "format_duration"]

RULE_NAME = "DriftlineRetrainModel"
ACTION_LABEL = "driftline_action"
ACTION_VALUE = "retrain"


def format_duration(seconds: float) -> str:
    """A Prometheus duration for ``for:``: ``900`` -> ``15m``, ``5400`` -> ``1h30m``, ``0`` -> ``0s``."""
    total = int(round(seconds))
    if total <= 0:
        return "0s"
    out = ""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        n, total = divmod(total, size)
        if n:
            out += f"{n}{unit}"
    return out


@dataclass(frozen=True)
class RetrainPolicy:
    """When drift warrants retraining, and how often it may start one.

    Parameters
    ----------
    sustained_seconds
        Dataset drift must hold this long without a quiet evaluation in between (the rule's ``for:``).
    cooldown_seconds
        After a request for a model, further episodes of that model start nothing for this long.
    """

    sustained_seconds: float = 900.0
    cooldown_seconds: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Any) -> RetrainPolicy:
        """The policy the service's ``retrain`` settings describe."""
        return cls(float(settings.sustained_seconds), float(settings.cooldown_seconds))

    # ---- the condition, as the embedded evaluator and Prometheus see it --------------------------
    def promql(self) -> str:
        """The rule's expression: one series per model version whose dataset drift flag is up.

        ``last_over_time`` over 3 minutes bridges a service restart or a leader change, so the
        sustained period does not start again (docs/operations.md, replicas).
        """
        return "max by (model, version) (last_over_time(driftline_dataset_drift[3m])) == 1"

    def rule_for(self) -> str:
        """The rule's ``for:``."""
        return format_duration(self.sustained_seconds)

    def should_retrain(self, drift_since: float | None, now: float) -> bool:
        """Embedded path: has the current unbroken run of dataset drift (started ``drift_since``) lasted?"""
        return drift_since is not None and now - drift_since >= self.sustained_seconds

    def wants_alert(self, status: str, labels: Mapping[str, str]) -> bool:
        """Alertmanager path: a firing alert routed to retraining that names a model."""
        return status == "firing" and labels.get(ACTION_LABEL) == ACTION_VALUE and bool(labels.get("model"))

    # ---- episodes: what makes two triggers the same retraining -----------------------------------
    @staticmethod
    def alert_episode(fingerprint: str, starts_at: str, model: str, version: str) -> str:
        """One alert episode: Alertmanager repeats an alert with the same fingerprint and startsAt."""
        return f"alert|{fingerprint}|{starts_at}|{model}|{version}"

    @staticmethod
    def internal_episode(model: str, version: str, drift_since: float) -> str:
        """One embedded episode: an unbroken run of dataset drift is identified by its start."""
        return f"internal|{model}|{version}|{drift_since:.3f}"

    @staticmethod
    def idempotency_key(episode: str, target: str) -> str:
        """The stable key a target sees for one episode (also the outbox's de-duplication key)."""
        return hashlib.sha256(f"{episode}|{target}".encode()).hexdigest()[:32]
