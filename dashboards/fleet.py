"""Fleet overview: every model at a glance, ingest health and the top drifting features."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from .common import Layout, base_dashboard, model_link, prom, stat_panel, table_panel, thresholds, ts_panel

__all__ = ["build"]


def build() -> dashboard.Dashboard:
    lay = Layout()
    d = base_dashboard("driftline-fleet", "Driftline / Fleet overview",
                       "Every monitored model: drift share, stale data, ingest health, top drifting features.")
    return (
        d.with_panel(stat_panel("Models reporting", prom("count(count by (model) (driftline_observations_total))",
                                                         instant=True), pos=lay.at(6, 4)))
        .with_panel(stat_panel("Models with dataset drift", prom("sum(driftline_dataset_drift) or vector(0)",
                                                                 instant=True),
                               pos=lay.at(6, 4), th=thresholds((None, "green"), (1, "red"))))
        .with_panel(stat_panel(
            "Stale models (no window for 15 min)",
            prom("count((time() - max by (model) (driftline_last_window_end_timestamp_seconds)) > 900) or vector(0)",
                 instant=True), pos=lay.at(6, 4), th=thresholds((None, "green"), (1, "red"))))
        .with_panel(stat_panel("Retraining requests pending", prom("sum(driftline_retrain_outbox_depth)", instant=True),
                               pos=lay.at(6, 4)))
        .with_panel(ts_panel("Dataset drift share by model",
                             prom("max by (model, version) (driftline_dataset_drift_share)", "{{model}} {{version}}"),
                             unit="percentunit", pos=lay.at(12, 8),
                             th=thresholds((None, "green"), (0.5, "red")), links=[model_link()],
                             desc="Share of features flagged as drifted; the dataset drifts at 50% (alert DriftlineDatasetDrift)."))
        .with_panel(ts_panel("Ingest by transport and result",
                             prom("sum by (transport, result) (rate(driftline_ingest_envelopes_total[$__rate_interval]))",
                                  "{{transport}} {{result}}"), unit="reqps", pos=lay.at(12, 8),
                             th=thresholds((None, "green"), (0.1, "red")),
                             desc="Rejected or dead-lettered over 0.1/s fires DriftlineIngestRejects."))
        .with_panel(ts_panel("Observations by model",
                             prom("sum by (model) (rate(driftline_observations_total[$__rate_interval]))", "{{model}}"),
                             unit="short", pos=lay.at(12, 8), links=[model_link()]))
        .with_panel(table_panel("Top drifting features (KS distance)",
                                prom('topk(10, max by (model, version, feature) (driftline_feature_drift_score{method="ks"}))',
                                     instant=True), pos=lay.at(12, 8), links=[model_link()]))
    )
