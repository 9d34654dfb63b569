"""Model detail: per-feature drift over time, prediction shift, data quality, traffic by variant and cohort."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from .common import MODEL_UID, Layout, base_dashboard, prom, report_link, stat_panel, thresholds, ts_panel

__all__ = ["build"]

SEL = 'model="$model",version="$version"'


def build() -> dashboard.Dashboard:
    lay = Layout()
    d = base_dashboard(MODEL_UID, "Driftline / Model detail",
                       "One model version: which features drift, how far the predictions moved, data quality.",
                       model_vars=True)
    return (
        d.with_panel(stat_panel("Dataset drift share", prom(f"driftline_dataset_drift_share{{{SEL}}}", instant=True),
                                unit="percentunit", pos=lay.at(6, 4),
                                th=thresholds((None, "green"), (0.5, "red"))))
        .with_panel(stat_panel("Drifted features", prom(f"sum(driftline_feature_drift_detected{{{SEL}}})", instant=True),
                               pos=lay.at(6, 4), th=thresholds((None, "green"), (1, "orange"))))
        .with_panel(stat_panel("Newest window age",
                               prom(f'time() - max(driftline_last_window_end_timestamp_seconds{{{SEL}}})', instant=True),
                               unit="s", pos=lay.at(6, 4), th=thresholds((None, "green"), (900, "red"))))
        .with_panel(stat_panel("Data-quality issues", prom(f"sum(driftline_data_quality_issues{{{SEL}}})", instant=True),
                               pos=lay.at(6, 4), th=thresholds((None, "green"), (1, "orange"))))
        .with_panel(ts_panel("Feature drift (KS distance) over time",
                             prom(f'driftline_feature_drift_score{{{SEL},method="ks"}}', "{{feature}}"),
                             unit="none", pos=lay.at(24, 9), th=thresholds((None, "green"), (0.1, "red")),
                             links=[report_link()],
                             desc="KS distance per feature; 0.1 is the default materiality threshold."))
        .with_panel(ts_panel("Prediction shift (KS distance)",
                             prom(f'driftline_prediction_shift_score{{{SEL},method="ks"}}', "{{output}}"),
                             unit="none", pos=lay.at(12, 8), th=thresholds((None, "green"), (0.1, "red"))))
        .with_panel(ts_panel("Missing ratio by feature", prom(f"driftline_feature_missing_ratio{{{SEL}}}", "{{feature}}"),
                             unit="percentunit", pos=lay.at(12, 8), th=thresholds((None, "green"), (0.05, "red"))))
        .with_panel(ts_panel("Data-quality signals", prom(f"driftline_data_quality_issues{{{SEL}}}", "{{signal}}"),
                             pos=lay.at(12, 8)))
        .with_panel(ts_panel("Observations by variant",
                             prom('sum by (variant) (rate(driftline_observations_total{model="$model"}[$__rate_interval]))',
                                  "{{variant}}"), pos=lay.at(12, 8)))
        .with_panel(ts_panel("Observations by cohort",
                             prom('sum by (cohort_label, cohort_value) '
                                  '(rate(driftline_cohort_observations_total{model="$model"}[$__rate_interval]))',
                                  "{{cohort_label}}={{cohort_value}}"), pos=lay.at(24, 8)))
    )
