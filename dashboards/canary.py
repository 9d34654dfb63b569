"""Canary: the verdict, every comparison's effect and always-valid p-value over time, rows per arm."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from .common import Layout, base_dashboard, prom, stat_panel, thresholds, ts_panel

__all__ = ["build"]


def build() -> dashboard.Dashboard:
    lay = Layout()
    d = base_dashboard("driftline-canary", "Driftline / Canary",
                       "A/B canary between model versions: verdict (continue, promote, rollback), effects, p-values.",
                       model_vars=True)
    return (
        d.with_panel(stat_panel("Verdict", prom('driftline_canary_verdict{model="$model"} == 1',
                                                "{{driftline_canary_verdict}}", instant=True),
                                pos=lay.at(8, 5), th=thresholds((None, "blue"))))
        .with_panel(stat_panel("Rows per arm", prom('driftline_canary_rows{model="$model"}', "{{arm}}", instant=True),
                               pos=lay.at(16, 5)))
        .with_panel(ts_panel("Verdict over time", prom('driftline_canary_verdict{model="$model"}',
                                                       "{{driftline_canary_verdict}}"), pos=lay.at(24, 6),
                             desc="1 for the current state; rollback fires DriftlineCanaryRollback."))
        .with_panel(ts_panel("Effects (canary minus baseline; latency as ratio - 1)",
                             prom('driftline_canary_effect{model="$model"}', "{{metric}}"), unit="none",
                             pos=lay.at(12, 9)))
        .with_panel(ts_panel("Always-valid p-values", prom('driftline_canary_p_value{model="$model"}', "{{metric}}"),
                             unit="none", pos=lay.at(12, 9), th=thresholds((None, "red"), (0.05, "green"))))
    )
