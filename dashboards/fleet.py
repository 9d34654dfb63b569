"""Fleet overview: every model at a glance, the top drifting features, ingest and retraining health."""

from __future__ import annotations

from .common import Board, alert_steps, link, model_links, prom, stat_panel, steps, table_panel, ts_panel
from .thresholds import ALERTS, DRIFT_SHARE, KS

__all__ = ["build"]

STALE = ALERTS["DriftlineStaleModel"]
REJECTS = ALERTS["DriftlineIngestRejects"]
REJECTED = 'driftline_ingest_envelopes_total{result=~"rejected|dead_lettered"}'


def build() -> Board:
    b = Board("driftline-fleet", "Driftline / Fleet overview",
              "Every monitored model: drift share, stale data, top drifting features, ingest and retraining.")
    b.links(link("Driftline status page", "${service_url}/", new_tab=True))
    b.row("Fleet")
    b.add(stat_panel("Models reporting", prom("count(count by (model) (driftline_observations_total))", instant=True),
                     unit="none", desc="Models with at least one window ingested since the service started."), 4, 4)
    b.add(stat_panel("Models in dataset drift", prom("sum(max by (model) (driftline_dataset_drift))", instant=True),
                     unit="none", th=alert_steps("DriftlineDatasetDrift"),
                     desc="Models whose drift share is over the dataset threshold now; DriftlineDatasetDrift "
                          "pages after 15 minutes and DriftlineRetrainModel asks for retraining."), 4, 4)
    b.add(stat_panel("Stale models", prom("sum(time() - max by (model) (driftline_last_window_end_timestamp_seconds) "
                                          f"> bool {STALE.value:g})", instant=True),
                     unit="none", th=steps((None, "green"), (1, "red")),
                     desc=f"Models with no window for over {STALE.value:g} s (DriftlineStaleModel)."), 4, 4)
    b.add(stat_panel("Envelopes rejected", prom(f"sum(rate({REJECTED}[5m]))", instant=True), unit="reqps",
                     th=alert_steps("DriftlineIngestRejects"), no_value="0",
                     desc=f"Rejected or dead-lettered envelopes per second; over {REJECTS.value:g}/s for 10 minutes "
                          "fires DriftlineIngestRejects."), 4, 4)
    b.add(stat_panel("Retraining requests waiting", prom("sum(driftline_retrain_outbox_depth)", instant=True),
                     unit="none", desc="Requests in the durable outbox, not yet acknowledged by a target."), 4, 4)
    b.add(stat_panel("Service version", prom("count by (version) (driftline_build_info)", "{{version}}", instant=True),
                     unit="none", names=True, desc="Driftline version of the scraped service replicas."), 4, 4)

    b.row("Drift")
    b.add(ts_panel("Dataset drift share by model",
                   prom("max by (model, version) (driftline_dataset_drift_share)", "{{model}} {{version}}"),
                   unit="percentunit", th=steps((None, "green"), (DRIFT_SHARE, "red")), links=model_links(),
                   desc=f"Share of features flagged as drifted. At {DRIFT_SHARE:.0%} (the default "
                        "evaluation.drift_share_threshold) the dataset drifts. Click a series for the model."), 12, 9)
    b.add(table_panel("Top drifting features (KS distance)",
                      prom('topk(10, max by (model, version, feature) (driftline_feature_drift_score{method="ks"}))',
                           instant=True, table_format=True),
                      th=steps((None, "green"), (KS, "red")),
                      links=model_links("${__data.fields.model}", "${__data.fields.version}"),
                      desc=f"The ten largest KS distances in the fleet now; {KS:g} is the default materiality "
                           "threshold. Click a row for the model detail or its Evidently report."), 12, 9)
    b.add(ts_panel("Prediction shift by model (KS distance)",
                   prom('max by (model, version, output) (driftline_prediction_shift_score{method="ks"})',
                        "{{model}} {{version}} {{output}}"),
                   unit="none", th=steps((None, "green"), (KS, "red")), links=model_links(),
                   desc="How far each model output moved from the reference; the model detail dashboard shows "
                        "which outputs are flagged."), 12, 8)
    b.add(ts_panel("Newest window age by model",
                   prom("time() - max by (model) (driftline_last_window_end_timestamp_seconds)", "{{model}}"),
                   unit="s", th=alert_steps("DriftlineStaleModel"), links=model_links(version=None),
                   desc=f"Seconds since the newest stored window ended; over {STALE.value:g} s for 5 minutes fires "
                        "DriftlineStaleModel."), 12, 8)

    b.row("Ingest")
    b.add(ts_panel("Envelopes by transport and result",
                   prom("sum by (transport, result) (rate(driftline_ingest_envelopes_total[$__rate_interval]))",
                        "{{transport}} {{result}}"), unit="reqps",
                   desc="Envelopes received over HTTP and Kafka: accepted, duplicate (redelivered, dropped), "
                        "rejected (malformed) or dead-lettered."), 8, 8)
    b.add(ts_panel("Rejected or dead-lettered envelopes",
                   prom(f"sum by (transport) (rate({REJECTED}[5m]))", "{{transport}}"), unit="reqps",
                   th=alert_steps("DriftlineIngestRejects"),
                   desc=f"The expression of DriftlineIngestRejects; it fires over {REJECTS.value:g}/s for 10 minutes."),
          8, 8)
    b.add(ts_panel("Observations by model",
                   prom("sum by (model) (rate(driftline_observations_total[$__rate_interval]))", "{{model}}"),
                   unit="suffix: rows/s", links=model_links(version=None),
                   desc="Rows observed on devices (exact, before sampling) per second."), 8, 8)
    b.add(ts_panel("Ingest bytes",
                   prom("sum by (transport) (rate(driftline_ingest_bytes_total[$__rate_interval]))", "{{transport}}"),
                   unit="Bps", desc="Envelope bytes received per second."), 12, 7)
    b.add(ts_panel("Windows merged by model",
                   prom("sum by (model, variant) (rate(driftline_windows_total[$__rate_interval]))",
                        "{{model}} {{variant}}"),
                   unit="suffix: windows/s", desc="Window profiles merged into the store per second."), 12, 7)

    b.row("Retraining")
    b.add(ts_panel("Retraining requests by result (last hour)",
                   prom("sum by (model, target, result) (increase(driftline_retrain_requests_total[1h]))",
                        "{{model}} -> {{target}} {{result}}"), unit="none",
                   desc="delivered, retried, deduplicated, cooldown or given_up, per model and target."), 12, 7)
    b.add(ts_panel("Retraining requests given up (last hour)",
                   prom('sum by (model, target) (increase(driftline_retrain_requests_total{result="given_up"}[1h]))',
                        "{{model}} -> {{target}}"), unit="none", th=alert_steps("DriftlineRetrainGivenUp"),
                   desc="Requests not acknowledged before the deadline; any fires DriftlineRetrainGivenUp."), 6, 7)
    b.add(ts_panel("Oldest pending retraining request",
                   prom("max(driftline_retrain_outbox_oldest_pending_age_seconds)", "oldest"), unit="s",
                   desc="Age of the oldest request still waiting in the outbox (0 when empty)."), 6, 7)
    return b
