"""Model detail: per-feature drift over time, prediction shift, data quality, traffic by variant and cohort."""

from __future__ import annotations

from .common import (
    MODEL_UID,
    Board,
    alert_steps,
    link,
    mapping,
    model_links,
    prom,
    stat_panel,
    steps,
    timeline_panel,
    ts_panel,
)
from .thresholds import ALERTS, DRIFT_SHARE, KS, PSI

__all__ = ["build"]

SEL = 'model="$model",version="$version"'
STALE = ALERTS["DriftlineStaleModel"]
COHORT = ALERTS["DriftlineStaleCohort"]
FLAGS = mapping({"0": ("ok", "green"), "1": ("drift", "red")})


def build() -> Board:
    b = Board(MODEL_UID, "Driftline / Model detail",
              "One model version: which features drift and how far, prediction shift, data quality, traffic.")
    b.variable("model", "Model", "label_values(driftline_observations_total, model)")
    b.variable("version", "Version", 'label_values(driftline_observations_total{model="$model"}, version)')
    b.links(link("Evidently drift report", "${service_url}/v1/models/${model}/report.html?version=${version}",
                 new_tab=True),
            link("Status page", "${service_url}/models/${model}?version=${version}", new_tab=True),
            link("Drift JSON", "${service_url}/v1/models/${model}/drift?version=${version}", new_tab=True),
            link("Fleet overview", "/d/driftline-fleet/driftline-fleet-overview"))
    here = model_links("$model", "$version")[1:]  # report and status page of the selected version

    b.row("Drift now")
    b.add(stat_panel("Dataset drift share", prom(f"max(driftline_dataset_drift_share{{{SEL}}})", instant=True),
                     unit="percentunit", th=steps((None, "green"), (DRIFT_SHARE, "red")),
                     desc=f"Share of features flagged; the dataset drifts at {DRIFT_SHARE:.0%} by default "
                          "(DriftlineDatasetDrift after 15 minutes)."), 4, 4)
    b.add(stat_panel("Drifted features", prom(f"sum(driftline_feature_drift_detected{{{SEL}}})", instant=True),
                     unit="none", th=steps((None, "green"), (1, "orange")),
                     desc="Features the decision rule flags now (significant after FDR control and material)."), 4, 4)
    b.add(stat_panel("Critical features drifted",
                     prom(f"sum(driftline_feature_drift_detected{{{SEL}}} * on (model, version, feature) "
                          f"driftline_feature_importance_critical{{{SEL}}})", instant=True),
                     unit="none", th=alert_steps("DriftlineCriticalFeatureDrift"),
                     desc="Drifted features marked critical in evaluation.critical_features; each one held for "
                          "10 minutes fires DriftlineCriticalFeatureDrift."), 4, 4)
    b.add(stat_panel("Newest window age",
                     prom(f"time() - max(driftline_last_window_end_timestamp_seconds{{{SEL}}})", instant=True),
                     unit="s", th=alert_steps("DriftlineStaleModel"),
                     desc=f"Over {STALE.value:g} s for 5 minutes fires DriftlineStaleModel."), 4, 4)
    b.add(stat_panel("Data-quality issues", prom(f"sum(driftline_data_quality_issues{{{SEL}}})", instant=True),
                     unit="none", th=steps((None, "green"), (1, "orange")),
                     desc="Columns with any data-quality signal now; breakdown below."), 4, 4)
    b.add(stat_panel("Reference", prom(f"driftline_reference_info{{{SEL}}}", "{{source}}", instant=True),
                     unit="none", names=True, no_value="none",
                     desc="Where the reference comes from: uploaded, first_window or week_ago."), 4, 4)

    b.row("Features")
    b.add(ts_panel("Feature drift: KS distance", prom(f'driftline_feature_drift_score{{{SEL},method="ks"}}',
                                                      "{{feature}}"),
                   unit="none", th=steps((None, "green"), (KS, "red")), links=here,
                   desc=f"Kolmogorov-Smirnov distance per numeric feature against the reference; {KS:g} is the "
                        "default materiality threshold of the decision rule."), 12, 9)
    b.add(ts_panel("Feature drift: PSI", prom(f'driftline_feature_drift_score{{{SEL},method="psi"}}', "{{feature}}"),
                   unit="none", th=steps((None, "green"), (PSI, "red")), links=here,
                   desc=f"Population stability index per feature; {PSI:g} is the default threshold."), 12, 9)
    b.add(timeline_panel("Drift flags by feature", prom(f"driftline_feature_drift_detected{{{SEL}}}", "{{feature}}"),
                         maps=FLAGS, desc="When the decision rule flagged each feature."), 12, 8)
    b.add(ts_panel("Missing ratio by feature", prom(f"driftline_feature_missing_ratio{{{SEL}}}", "{{feature}}"),
                   unit="percentunit", desc="Missing plus NaN share in the current window; a jump of more than 5 "
                                            "points over the reference is a missing_rate_jump signal."), 12, 8)

    b.row("Predictions and data quality")
    b.add(ts_panel("Prediction shift: KS distance",
                   prom(f'driftline_prediction_shift_score{{{SEL},method="ks"}}', "{{output}}"),
                   unit="none", th=steps((None, "green"), (KS, "red")), links=here,
                   desc="How far each output's distribution moved from the reference."), 8, 8)
    b.add(timeline_panel("Prediction shift flags", prom(f"driftline_prediction_shift_detected{{{SEL}}}", "{{output}}"),
                         maps=FLAGS, desc="A flagged output held for 15 minutes fires DriftlinePredictionShift."), 8, 8)
    b.add(ts_panel("Data-quality signals", prom(f"driftline_data_quality_issues{{{SEL}}}", "{{signal}}"),
                   unit="none", th=alert_steps("DriftlineSchemaChange"),
                   desc="Columns per signal. Any missing_rate_jump for 10 minutes fires DriftlineMissingRateJump; "
                        "any missing_column, new_column or type_change for 5 minutes fires DriftlineSchemaChange."),
          8, 8)

    b.row("Traffic")
    b.add(ts_panel("Observations by version and variant",
                   prom('sum by (version, variant) (rate(driftline_observations_total{model="$model"}'
                        '[$__rate_interval]))', "{{version}} {{variant}}"),
                   unit="suffix: rows/s", desc="Rows observed per second for every version of the model."), 12, 8)
    b.add(ts_panel("Observations by cohort",
                   prom('sum by (cohort_label, cohort_value) '
                        '(rate(driftline_cohort_observations_total{model="$model"}[$__rate_interval]))',
                        "{{cohort_label}}={{cohort_value}}"),
                   unit="suffix: rows/s", desc="Rows per cohort value (top N values, the rest folded into other)."),
          12, 8)
    b.add(ts_panel("Newest window age by cohort",
                   prom('time() - max by (cohort_label, cohort_value) '
                        '(driftline_cohort_last_window_end_timestamp_seconds{model="$model"})',
                        "{{cohort_label}}={{cohort_value}}"),
                   unit="s", th=alert_steps("DriftlineStaleCohort", "orange"),
                   desc=f"Over {COHORT.value:g} s for 10 minutes fires DriftlineStaleCohort."), 24, 7)

    b.row("Performance (delayed labels)")
    b.add(stat_panel("Below its bound", prom(f"max(driftline_model_performance_below_threshold{{{SEL}}})",
                                             instant=True),
                     unit="none", th=alert_steps("DriftlinePerformanceBelowThreshold"),
                     maps=mapping({"0": ("ok", "green"), "1": ("BELOW", "red")}),
                     desc="1 when a bound of performance.thresholds is breached on the labelled predictions of "
                          "the lookback; held for 15 minutes it fires DriftlinePerformanceBelowThreshold."), 6, 8)
    b.add(stat_panel("Labelled predictions",
                     prom(f'driftline_model_performance_labelled_predictions{{{SEL},cohort="all"}}', instant=True),
                     unit="none", desc="Predictions joined to a delayed label in performance.lookback_seconds; "
                                       "below performance.min_labelled no bound is judged."), 6, 8)
    b.add(ts_panel("Classification metrics",
                   *(prom(f'driftline_model_performance_{m}_ratio{{{SEL},cohort="all"}}', label, ref=ref)
                     for m, label, ref in (("accuracy", "accuracy", "A"), ("precision", "precision", "B"),
                                           ("recall", "recall", "C"), ("f1", "F1", "D"), ("roc_auc", "ROC AUC", "E"))),
                   unit="percentunit", desc="Real performance of the version on its labelled predictions (all "
                                            "cohorts), at the decision threshold; ROC AUC from score sketches."),
          12, 8)
    b.add(ts_panel("Accuracy by cohort", prom(f"driftline_model_performance_accuracy_ratio{{{SEL}}}", "{{cohort}}"),
                   unit="percentunit", desc="Accuracy per cohort (all, and the largest cohorts): a cohort "
                                            "falling alone points at its devices or inputs."), 12, 8)
    b.add(ts_panel("Calibration error (ECE)",
                   prom(f'driftline_model_performance_ece_ratio{{{SEL},cohort="all"}}', "ECE"), unit="none",
                   desc="Expected calibration error of the scores (equal-width bins); rising while accuracy "
                        "holds means the scores no longer mean what they say."), 12, 8)
    return b
