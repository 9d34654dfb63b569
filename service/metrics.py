"""Prometheus exposition: collectors that read current state at scrape time (nothing cached here).

One collector per source of truth: :class:`DriftCollector` (the evaluator's newest results and the
store's per-stream totals), :class:`IngestCollector` (ingest counters and device reports),
:class:`CanaryCollector`, :class:`RetrainCollector` and :class:`EvaluationCollector`. Cohort labels are capped to the top N values
by rows, the rest folded into ``other``; a device id is never a label.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, StateSetMetricFamily

from driftline import __version__
from driftline.stats import SCORE_METHODS

from .evaluation import EVALUATION_STAGES, Evaluator
from .parts import IngestStats, num
from .retrain import Dispatcher

__all__ = ["build_registry"]



def _top_cohorts(stats: IngestStats, top_n: int) -> dict[tuple[str, str, str], str]:
    """Map (model, label, value) to the value to expose: itself if in the top N by rows, else 'other'."""
    by_label: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for (model, label, value), rows in stats.cohort_rows.items():
        by_label.setdefault((model, label), []).append((rows, value))
    out = {}
    for (model, label), vals in by_label.items():
        keep = {v for _, v in sorted(vals, key=lambda x: (-x[0], x[1]))[:top_n]}
        for _, v in vals:
            out[(model, label, v)] = v if v in keep else "other"
    return out


class DriftCollector:
    """Drift scores, decisions, data quality and references from the evaluator's newest results."""

    def __init__(self, evaluator: Evaluator, fleet_visible: Callable[[], bool] = lambda: True) -> None:
        self.evaluator = evaluator
        self.fleet_visible = fleet_visible

    def collect(self) -> Any:
        if not self.fleet_visible():
            return
        score = GaugeMetricFamily("driftline_feature_drift_score", "Drift score of a feature by method",
                                  labels=["model", "version", "feature", "method"])
        detected = GaugeMetricFamily("driftline_feature_drift_detected", "1 when a feature is flagged as drifted",
                                     labels=["model", "version", "feature"])
        critical = GaugeMetricFamily("driftline_feature_importance_critical", "1 for features marked critical",
                                     labels=["model", "version", "feature"])
        missing = GaugeMetricFamily("driftline_feature_missing_ratio", "Missing or NaN share in the current window",
                                    labels=["model", "version", "feature"])
        share = GaugeMetricFamily("driftline_dataset_drift_share", "Share of features flagged",
                                  labels=["model", "version"])
        dataset = GaugeMetricFamily("driftline_dataset_drift", "1 when drift share is over the threshold",
                                    labels=["model", "version"])
        shift = GaugeMetricFamily("driftline_prediction_shift_score", "Shift score of a model output by method",
                                  labels=["model", "version", "output", "method"])
        shift_d = GaugeMetricFamily("driftline_prediction_shift_detected", "1 when a model output is flagged",
                                    labels=["model", "version", "output"])
        dq = GaugeMetricFamily("driftline_data_quality_issues", "Columns with a data-quality signal",
                               labels=["model", "version", "signal"])
        ref = GaugeMetricFamily("driftline_reference_info", "The reference in use", labels=["model", "version", "source"])
        for st in self.evaluator.snapshot().models.values():
            if st.drift is None:
                continue
            rep = st.drift.report
            m, v = st.model, st.version
            for f in rep.features:
                scores = f.clean_scores()
                for meth in SCORE_METHODS:
                    val = scores.get(meth)
                    if val is not None:
                        score.add_metric([m, v, f.name, meth], val)
                detected.add_metric([m, v, f.name], 1.0 if f.drift_detected else 0.0)
                critical.add_metric([m, v, f.name], 1.0 if f.critical else 0.0)
                missing.add_metric([m, v, f.name], f.missing_current)
            for o in rep.outputs:
                scores = o.clean_scores()
                for meth in SCORE_METHODS:
                    val = scores.get(meth)
                    if val is not None:
                        shift.add_metric([m, v, o.name, meth], val)
                shift_d.add_metric([m, v, o.name], 1.0 if o.drift_detected else 0.0)
            share.add_metric([m, v], rep.shown_share)
            dataset.add_metric([m, v], 1.0 if rep.dataset_drift else 0.0)
            for signal, n in rep.issue_counts.items():
                dq.add_metric([m, v, signal], n)
            if st.reference_source:
                ref.add_metric([m, v, st.reference_source], 1.0)
        yield from (score, detected, critical, missing, share, dataset, shift, shift_d, dq, ref)


class IngestCollector:
    """Ingest counters, per-stream totals, cohorts and what devices report about themselves."""

    def __init__(self, stats: IngestStats, top_n: int, fleet_visible: Callable[[], bool] = lambda: True) -> None:
        self.stats = stats
        self.top_n = top_n
        self.fleet_visible = fleet_visible  # only the leader replica exposes fleet state (service/fleet.py)

    def collect(self) -> Any:
        s = self.stats
        now = time.time()
        build = GaugeMetricFamily("driftline_build_info", "Driftline build", labels=["version"])
        build.add_metric([__version__], 1.0)
        env = CounterMetricFamily("driftline_ingest_envelopes", "Envelopes received", labels=["transport", "result"])
        nbytes = CounterMetricFamily("driftline_ingest_bytes", "Envelope bytes received", labels=["transport"])
        obs = CounterMetricFamily("driftline_observations", "Rows observed on devices",
                                  labels=["model", "version", "variant"])
        win = CounterMetricFamily("driftline_windows", "Window profiles merged", labels=["model", "version", "variant"])
        last = GaugeMetricFamily("driftline_last_window_end_timestamp_seconds", "End of the newest window",
                                 labels=["model", "version"])
        lag = GaugeMetricFamily("driftline_ingest_delivery_lag_seconds", "Ingest time minus window end, newest",
                                labels=["model"])
        c_obs = CounterMetricFamily("driftline_cohort_observations", "Rows per cohort value",
                                    labels=["model", "cohort_label", "cohort_value"])
        c_last = GaugeMetricFamily("driftline_cohort_last_window_end_timestamp_seconds",
                                   "End of the newest window from a cohort", labels=["model", "cohort_label", "cohort_value"])
        reporting = GaugeMetricFamily("driftline_edge_devices_reporting", "Devices that sent a window in 15 minutes",
                                      labels=["model", "cohort_label", "cohort_value"])
        pending = GaugeMetricFamily("driftline_edge_spool_pending_windows", "Spool backlog reported by devices",
                                    labels=["model"])
        oldest = GaugeMetricFamily("driftline_edge_spool_oldest_pending_age_seconds",
                                   "Oldest pending window age reported by devices", labels=["model"])
        rss = GaugeMetricFamily("driftline_edge_sidecar_resident_memory_bytes", "Largest sidecar RSS reported",
                                labels=["model"])
        cpu = CounterMetricFamily("driftline_edge_sidecar_cpu_seconds", "Sidecar CPU seconds reported", labels=["model"])
        with s.lock:
            for (t, r), n in s.envelopes.items():
                env.add_metric([t, r], n)
            for t, n in s.bytes.items():
                nbytes.add_metric([t], n)
            if not self.fleet_visible():
                yield from (build, env, nbytes)
                return
            for k, n in s.observations.items():
                obs.add_metric(list(k), n)
            for k, n in s.windows.items():
                win.add_metric(list(k), n)
            for (m, v), ts in s.last_end.items():
                last.add_metric([m, v], ts)
            for m, v in s.lag.items():
                lag.add_metric([m], v)
            names = _top_cohorts(s, self.top_n)
            rows: Counter[tuple[str, str, str]] = Counter()
            ends: dict[tuple[str, str, str], float] = {}
            for k, n in s.cohort_rows.items():
                shown = (k[0], k[1], names[k])
                rows[shown] += n
                ends[shown] = max(ends.get(shown, 0.0), s.cohort_last_end[k])
            for k, n in rows.items():
                c_obs.add_metric(list(k), n)
                c_last.add_metric(list(k), ends[k])
            for model, devices in s.devices.items():
                live: Counter[tuple[str, str, str]] = Counter()
                total_pending = 0.0
                max_age = max_rss = total_cpu = 0.0
                for source, rep in devices.items():
                    life = s.lives.get((model, source))
                    total_cpu += life.total if life is not None else num(rep.get("cpu_seconds"))
                    if now - rep["seen"] > 900:
                        continue
                    total_pending += num(rep.get("spool_pending"))
                    max_age = max(max_age, num(rep.get("spool_oldest_age_s")))
                    max_rss = max(max_rss, num(rep.get("rss_bytes")))
                    for label, value in rep["cohort"].items():
                        live[(model, label, names.get((model, label, value), "other"))] += 1
                for k, n in live.items():
                    reporting.add_metric(list(k), n)
                pending.add_metric([model], total_pending)
                oldest.add_metric([model], max_age)
                rss.add_metric([model], max_rss)
                cpu.add_metric([model], total_cpu)
        yield from (build, env, nbytes, obs, win, last, lag, c_obs, c_last, reporting, pending, oldest, rss, cpu)


CANARY_VERDICTS = ("continue", "promote", "rollback", "inconclusive")


class CanaryCollector:
    """Canary verdicts as a state set, with effect, p-value and rows per comparison."""

    def __init__(self, evaluator: Evaluator, fleet_visible: Callable[[], bool] = lambda: True) -> None:
        self.evaluator = evaluator
        self.fleet_visible = fleet_visible

    def collect(self) -> Any:
        if not self.fleet_visible():
            return
        verdict = StateSetMetricFamily("driftline_canary_verdict",
                                       "Verdict of the model's newest canary experiment (rollout)",
                                       labels=["model", "baseline_version", "canary_version"])
        effect = GaugeMetricFamily("driftline_canary_effect", "Canary minus baseline (ratio - 1 for latency)",
                                   labels=["model", "baseline_version", "canary_version", "metric"])
        pval = GaugeMetricFamily("driftline_canary_p_value", "Always-valid p-value of a comparison",
                                 labels=["model", "baseline_version", "canary_version", "metric"])
        rows = GaugeMetricFamily("driftline_canary_rows", "Rows per arm",
                                 labels=["model", "baseline_version", "canary_version", "arm"])
        for model, st in self.evaluator.snapshot().canaries.items():
            res = st.result
            labels = [model, res.config.baseline_version, res.config.canary_version]
            verdict.add_metric(labels, {v: res.verdict == v for v in CANARY_VERDICTS})
            for c in res.comparisons:
                if c["effect"] is not None:
                    effect.add_metric([*labels, c["metric"]], c["effect"])
                if c["p_value"] is not None:
                    pval.add_metric([*labels, c["metric"]], c["p_value"])
            for arm, n in res.rows.items():
                rows.add_metric([*labels, arm], n)
        yield from (verdict, effect, pval, rows)


class RetrainCollector:
    """Retraining requests by result, and the outbox's depth and oldest pending age."""

    def __init__(self, dispatcher: Dispatcher, fleet_visible: Callable[[], bool] = lambda: True) -> None:
        self.dispatcher = dispatcher
        self.fleet_visible = fleet_visible  # the outbox is shared: its gauges come from the leader only

    def collect(self) -> Any:
        req = CounterMetricFamily("driftline_retrain_requests", "Retraining requests by result",
                                  labels=["model", "target", "result"])
        for (m, t, r), n in list(self.dispatcher.results.items()):
            req.add_metric([m, t, r], n)
        if not self.fleet_visible():
            yield req
            return
        depth, age = self.dispatcher.outbox_stats()
        d = GaugeMetricFamily("driftline_retrain_outbox_depth", "Requests waiting in the outbox")
        d.add_metric([], depth)
        a = GaugeMetricFamily("driftline_retrain_outbox_oldest_pending_age_seconds", "Age of the oldest pending request")
        a.add_metric([], age)
        yield from (req, d, a)


class EvaluationCollector:
    """Failed background evaluations by stage (``drift``, ``canary``, ``retrain``, ``retention``)."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def collect(self) -> Any:
        errors = CounterMetricFamily("driftline_evaluation_errors", "Background evaluations that failed, by stage "
                                     "(the model is in the log)", labels=["stage"])
        counts = self.evaluator.snapshot().errors
        for stage in EVALUATION_STAGES:
            errors.add_metric([stage], counts.get(stage, 0))
        refused = CounterMetricFamily("driftline_limit_refusals", "Windows refused because a new name would pass "
                                      "a configured cap (limits.*), by cap", labels=["limit"])
        for kind, n in self.evaluator.store.catalog.refusals().items():
            refused.add_metric([kind], n)
        yield errors
        yield refused


def build_registry(evaluator: Evaluator, stats: IngestStats, dispatcher: Dispatcher, top_n: int,
                   fleet_visible: Callable[[], bool] = lambda: True) -> CollectorRegistry:
    """A fresh registry with every collector (never the global one).

    ``fleet_visible`` says whether this replica exposes fleet state (the leader) or only its own
    per-process counters (see service/fleet.py); evaluation errors and cap refusals are per process.
    """
    reg = CollectorRegistry(auto_describe=False)
    for c in (DriftCollector(evaluator, fleet_visible), IngestCollector(stats, top_n, fleet_visible),
              CanaryCollector(evaluator, fleet_visible), RetrainCollector(dispatcher, fleet_visible),
              EvaluationCollector(evaluator)):
        reg.register(c)  # type: ignore[arg-type]
    return reg
