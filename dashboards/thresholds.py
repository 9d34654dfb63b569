"""Where the dashboards turn red, kept equal to the alert rules in ``alerts/`` (a test compares them).

Each entry names an alert and the comparison its rule ends with (``> 900``, ``== 1``); ``step`` is
the value at which a dashboard threshold changes colour (the rule's value, or the first whole count
above it for ``> 0`` on counts). Drift thresholds come from the statistics defaults, so a panel's
line sits where the decision rule flags a feature.
"""

from __future__ import annotations

from dataclasses import dataclass

from driftline.stats.canary import CanaryConfig
from driftline.stats.decision import DEFAULT_THRESHOLDS, DriftConfig

__all__ = ["ALERTS", "CANARY_ALPHA", "DRIFT_SHARE", "KS", "PSI", "SERVICE_ALERTS", "SIDECAR_ONLY_ALERTS",
           "DEVICE_HEALTH_ALERTS",
           "SIDECAR_RSS_BUDGET_BYTES",
           "AlertThreshold"]


@dataclass(frozen=True)
class AlertThreshold:
    """An alert's comparison, as written at the end of its rule's expression."""

    alert: str
    op: str
    value: float
    step: float
    equivalent: tuple[float, ...] = ()  # other steps that mean the same, e.g. a drift share for a 0/1 flag

    @property
    def comparison(self) -> str:
        """The text the rule ends with, e.g. ``> 900``."""
        return f"{self.op} {self.value:g}"


def _t(alert: str, op: str, value: float, step: float | None = None, *equivalent: float) -> AlertThreshold:
    return AlertThreshold(alert, op, value, value if step is None else step, equivalent)


KS = DEFAULT_THRESHOLDS["ks"]
PSI = DEFAULT_THRESHOLDS["psi"]
DRIFT_SHARE = DriftConfig().drift_share_threshold

# driftline_dataset_drift is 1 when the drift share reaches evaluation.drift_share_threshold.
ALERTS: dict[str, AlertThreshold] = {a.alert: a for a in (
    _t("DriftlineDatasetDrift", "==", 1, 1, DRIFT_SHARE),
    _t("DriftlineRetrainModel", "==", 1, 1, DRIFT_SHARE),
    _t("DriftlineCriticalFeatureDrift", "==", 1),
    _t("DriftlinePredictionShift", "==", 1),
    _t("DriftlineMissingRateJump", ">", 0, 1),
    _t("DriftlineSchemaChange", ">", 0, 1),
    _t("DriftlineStaleModel", ">", 900),
    _t("DriftlineStaleCohort", ">", 1800),
    _t("DriftlineCanaryRollback", "==", 1),
    _t("DriftlineIngestRejects", ">", 0.1),
    _t("DriftlineEdgeSpoolBacklog", ">", 1800),
    _t("DriftlineRetrainGivenUp", ">", 0, 1),
    _t("DriftlineShadowWorse", "==", 1),
    _t("DriftlinePerformanceBelowThreshold", "==", 1),
    _t("DriftlineEdgeConformanceFailed", ">", 0, 1),
    _t("DriftlineEdgeConformanceNotRunning", ">", 0, 1),
)}

# Rules over series that only a sidecar's own /metrics has (no cloud dashboard can show them), and the
# rule over Prometheus's own `up` of the service (when it fires, the dashboards have nothing to show).
SIDECAR_ONLY_ALERTS = frozenset({"DriftlineSidecarSpoolBacklog"})
SERVICE_ALERTS = frozenset({"DriftlineServiceDown"})
# Rules that name one device (service/device_health.py): read in the alert and its runbook, no panel yet.
DEVICE_HEALTH_ALERTS = frozenset({"DriftlineDeviceMemoryLeak", "DriftlineDeviceCpuCreep",
                                  "DriftlineDeviceLatencyRegression"})

CANARY_ALPHA = CanaryConfig.alpha
SIDECAR_RSS_BUDGET_BYTES = 150e6  # the sidecar's footprint budget (docs/sidecar.md)
