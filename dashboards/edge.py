"""Edge fleet health: spool backlog, delivery lag, cohorts reporting, sidecar resource use."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from .common import Layout, base_dashboard, prom, thresholds, ts_panel

__all__ = ["build"]


def build() -> dashboard.Dashboard:
    lay = Layout()
    d = base_dashboard("driftline-edge", "Driftline / Edge fleet health",
                       "What devices report about themselves in every envelope (no device is a label).")
    return (
        d.with_panel(ts_panel("Spool backlog (windows waiting on devices)",
                              prom("sum by (model) (driftline_edge_spool_pending_windows)", "{{model}}"),
                              pos=lay.at(12, 8)))
        .with_panel(ts_panel("Oldest pending window on any device",
                             prom("max by (model) (driftline_edge_spool_oldest_pending_age_seconds)", "{{model}}"),
                             unit="s", pos=lay.at(12, 8), th=thresholds((None, "green"), (1800, "red")),
                             desc="Over 30 minutes fires DriftlineEdgeSpoolBacklog."))
        .with_panel(ts_panel("Delivery lag (ingest time - window end)",
                             prom("max by (model) (driftline_ingest_delivery_lag_seconds)", "{{model}}"), unit="s",
                             pos=lay.at(12, 8)))
        .with_panel(ts_panel("Devices reporting by cohort",
                             prom("sum by (cohort_label, cohort_value) (driftline_edge_devices_reporting)",
                                  "{{cohort_label}}={{cohort_value}}"), pos=lay.at(12, 8)))
        .with_panel(ts_panel("Sidecar memory (largest RSS)",
                             prom("max by (model) (driftline_edge_sidecar_resident_memory_bytes)", "{{model}}"),
                             unit="bytes", pos=lay.at(12, 8), th=thresholds((None, "green"), (150e6, "orange"))))
        .with_panel(ts_panel("Sidecar CPU (all devices)",
                             prom("sum by (model) (rate(driftline_edge_sidecar_cpu_seconds_total[$__rate_interval]))",
                                  "{{model}}"), unit="percentunit", pos=lay.at(12, 8)))
    )
