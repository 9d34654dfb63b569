"""Edge fleet health: spool backlog, delivery lag, cohorts reporting, sidecar resource use.

Devices are not scraped: each envelope's producer map carries the sidecar's spool backlog and
resource use, which the service aggregates per model (no device id is ever a label).
"""

from __future__ import annotations

from .common import Board, alert_steps, link, model_links, prom, stat_panel, steps, ts_panel
from .thresholds import ALERTS, SIDECAR_RSS_BUDGET_BYTES

__all__ = ["build"]

M = 'model=~"$model"'
SPOOL = ALERTS["DriftlineEdgeSpoolBacklog"]
COHORT = ALERTS["DriftlineStaleCohort"]


def build() -> Board:
    b = Board("driftline-edge", "Driftline / Edge fleet health",
              "What sidecars report about themselves in every envelope: spool backlog, delivery lag, cohorts "
              "reporting, memory and CPU.")
    b.variable("model", "Model", "label_values(driftline_edge_spool_pending_windows, model)", include_all=True)
    b.links(link("Driftline status page", "${service_url}/", new_tab=True),
            link("Fleet overview", "/d/driftline-fleet/driftline-fleet-overview"))

    b.row("Delivery")
    b.add(stat_panel("Devices reporting (15 min)",
                     prom(f"sum(max by (model) (sum by (model, cohort_label) (driftline_edge_devices_reporting{{{M}}})))",
                          instant=True),
                     unit="none", desc="Distinct devices that sent a window in the last 15 minutes."), 6, 4)
    b.add(stat_panel("Windows waiting on devices",
                     prom(f"sum(driftline_edge_spool_pending_windows{{{M}}})", instant=True), unit="none",
                     desc="Spool backlog the devices last reported, summed."), 6, 4)
    b.add(stat_panel("Oldest pending window",
                     prom(f"max(driftline_edge_spool_oldest_pending_age_seconds{{{M}}})", instant=True), unit="s",
                     th=alert_steps("DriftlineEdgeSpoolBacklog"),
                     desc=f"Over {SPOOL.value:g} s for 10 minutes fires DriftlineEdgeSpoolBacklog."), 6, 4)
    b.add(stat_panel("Largest delivery lag",
                     prom(f"max(driftline_ingest_delivery_lag_seconds{{{M}}})", instant=True), unit="s",
                     desc="Ingest time minus window end of the newest envelope."), 6, 4)
    b.add(ts_panel("Spool backlog (windows waiting on devices)",
                   prom(f"sum by (model) (driftline_edge_spool_pending_windows{{{M}}})", "{{model}}"),
                   unit="none", links=model_links(version=None),
                   desc="Windows closed on devices and not yet confirmed by the service."), 12, 8)
    b.add(ts_panel("Oldest pending window on any device",
                   prom(f"max by (model) (driftline_edge_spool_oldest_pending_age_seconds{{{M}}})", "{{model}}"),
                   unit="s", th=alert_steps("DriftlineEdgeSpoolBacklog"),
                   desc=f"Over {SPOOL.value:g} s (30 minutes) for 10 minutes fires DriftlineEdgeSpoolBacklog."),
          12, 8)
    b.add(ts_panel("Delivery lag (ingest time - window end)",
                   prom(f"max by (model) (driftline_ingest_delivery_lag_seconds{{{M}}})", "{{model}}"), unit="s",
                   desc="Seconds between a window's end and its arrival, newest envelope per model; grows when "
                        "devices deliver from their spool after an outage."), 12, 8)

    b.row("Cohorts")
    b.add(ts_panel("Devices reporting by cohort",
                   prom(f"sum by (cohort_label, cohort_value) (driftline_edge_devices_reporting{{{M}}})",
                        "{{cohort_label}}={{cohort_value}}"),
                   unit="none", desc="Devices per cohort value (site, hardware, firmware, ...) in the last 15 "
                                     "minutes; the top N values keep their name, the rest are other."), 12, 8)
    b.add(ts_panel("Newest window age by cohort",
                   prom("time() - max by (model, cohort_label, cohort_value) "
                        f"(driftline_cohort_last_window_end_timestamp_seconds{{{M}}})",
                        "{{model}} {{cohort_label}}={{cohort_value}}"),
                   unit="s", th=alert_steps("DriftlineStaleCohort", "orange"),
                   desc=f"A cohort silent for over {COHORT.value:g} s (10 minutes on) fires DriftlineStaleCohort."),
          12, 8)

    b.row("Sidecar resources")
    b.add(ts_panel("Sidecar memory (largest RSS)",
                   prom(f"max by (model) (driftline_edge_sidecar_resident_memory_bytes{{{M}}})", "{{model}}"),
                   unit="bytes", th=steps((None, "green"), (SIDECAR_RSS_BUDGET_BYTES, "orange")),
                   desc="Largest resident memory any sidecar reported; the footprint budget is 150 MB."), 12, 8)
    b.add(ts_panel("Sidecar CPU (all devices)",
                   prom(f"sum by (model) (rate(driftline_edge_sidecar_cpu_seconds_total{{{M}}}[$__rate_interval]))",
                        "{{model}}"),
                   unit="percentunit", desc="CPU the sidecars use, summed over devices (1 = one core)."), 12, 8)

    b.row("Golden-set conformance")
    b.add(stat_panel("Devices failing conformance",
                     prom(f'sum(driftline_edge_conformance_devices{{{M},result="fail"}})', instant=True),
                     unit="none", th=alert_steps("DriftlineEdgeConformanceFailed"),
                     desc="Devices whose newest golden-set run computed other outputs than the cloud (beyond the "
                          "set's tolerances); any fires DriftlineEdgeConformanceFailed."), 6, 8)
    b.add(stat_panel("Devices that cannot run it",
                     prom(f'sum(driftline_edge_conformance_devices{{{M},result="error"}})', instant=True),
                     unit="none", th=alert_steps("DriftlineEdgeConformanceNotRunning", "orange"),
                     desc="Devices whose model server failed, refused or timed out on the golden set; for 30 "
                          "minutes it fires DriftlineEdgeConformanceNotRunning."), 6, 8)
    b.add(ts_panel("Devices by conformance result",
                   prom(f"sum by (model, version, result) (driftline_edge_conformance_devices{{{M}}})",
                        "{{model}} {{version}} {{result}}"),
                   unit="none", desc="Devices by the result of their newest golden-set run: pass, fail, error."),
          12, 8)
    b.add(ts_panel("Largest output difference from the cloud",
                   prom(f"max by (model, version) (driftline_edge_conformance_max_abs_diff{{{M}}})",
                        "{{model}} {{version}}"),
                   unit="none", desc="Largest absolute difference between a device's and the cloud's outputs on "
                                     "the golden set, over devices (+Inf: a NaN or infinity on one side only)."),
          12, 8)
    b.add(ts_panel("Failing devices by cohort",
                   prom(f'sum by (cohort_label, cohort_value) (driftline_edge_conformance_cohort_devices{{{M},'
                        'result="fail"})', "{{cohort_label}}={{cohort_value}}"),
                   unit="none", desc="Where the failures are: devices failing per firmware, runtime or driver "
                                     "value (a driver or runtime upgrade shows as one cohort)."), 12, 8)
    return b
