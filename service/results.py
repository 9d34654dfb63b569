"""The evaluator's results as frozen values, and the one snapshot every reader takes of them.

A background pass replaces these values whole; it never changes one in place. So a collector, the
status page or a retraining trigger can read a :class:`Snapshot` (taken under the evaluator's lock,
see :meth:`driftline.service.evaluation.Evaluator.snapshot`) without holding any lock, and a renamed
field fails where it is read, in the type checker and the tests, not at scrape time. JSON is made
at the edges alone (:meth:`DriftResult.to_dict`, :meth:`CanaryState.to_dict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from driftline.stats import CanaryResult, DriftReport

__all__ = ["STATUS", "CanaryState", "DriftResult", "ModelState", "Snapshot"]

STATUS = {"promote": "promoted", "rollback": "rolled_back", "inconclusive": "inconclusive"}
"""An experiment's status by verdict; any other verdict is ``running``."""


@dataclass(frozen=True)
class DriftResult:
    """One drift evaluation of a model version over ``(since, until]``: the core's report and its inputs."""

    model: str
    version: str
    variant: str | None
    since: float
    until: float
    reference_source: str
    windows: int
    report: DriftReport

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``GET /v1/models/{model}/drift``: the report, then where it came from."""
        out = self.report.to_dict()
        out.update(model=self.model, version=self.version, variant=self.variant, since=self.since, until=self.until,
                   reference_source=self.reference_source, windows=self.windows)
        return out


@dataclass(frozen=True)
class ModelState:
    """The newest background evaluation of one model version."""

    model: str
    version: str
    drift: DriftResult | None = None
    reference_source: str | None = None
    evaluated_at: float = 0.0
    drift_since: float | None = None  # start of the current unbroken run of dataset drift


@dataclass(frozen=True)
class CanaryState:
    """One judgement of a canary experiment: the core's result with the experiment it belongs to."""

    model: str
    rollout: str
    controller: str
    started_at: float
    evaluated_at: float
    decision: str | None
    decided_at: float | None
    result: CanaryResult

    @property
    def verdict(self) -> str:
        return self.result.verdict

    @property
    def status(self) -> str:
        """``promoted``, ``rolled_back``, ``inconclusive`` or ``running``."""
        return STATUS.get(self.result.verdict, "running")

    def to_dict(self) -> dict[str, Any]:
        """The JSON of a verdict (the canary and gate endpoints, the status page)."""
        out = self.result.to_dict()
        out.update(model=self.model, rollout=self.rollout, controller=self.controller, started_at=self.started_at,
                   created_at=self.started_at, evaluated_at=self.evaluated_at, decision=self.decision,
                   decided_at=self.decided_at, status=self.status)
        return out


@dataclass(frozen=True)
class Snapshot:
    """The evaluator's newest results at one instant: read-only mappings of frozen values."""

    models: Mapping[tuple[str, str], ModelState]
    canaries: Mapping[str, CanaryState]
    errors: Mapping[str, int]  # stage -> failed evaluations

    def drift(self, model: str, version: str) -> DriftResult | None:
        """The newest background drift result of ``model`` ``version``, if any."""
        st = self.models.get((model, version))
        return st.drift if st is not None else None

    def newest_drift(self, model: str) -> DriftResult | None:
        """The most recently evaluated drift result of any version of ``model`` (the status page's row)."""
        states = [s for (name, _), s in self.models.items() if name == model and s.drift is not None]
        return max(states, key=lambda s: s.evaluated_at).drift if states else None
