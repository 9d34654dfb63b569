"""Golden-set conformance of the fleet: what each device's newest golden run said, by model, version, cohort.

Sidecars with ``golden.enabled`` stamp their newest golden-set results into every envelope (the
optional ``conformance`` key, docs/wire-format.md). :meth:`ConformanceBook.record` keeps the newest
result per (model, version, device, golden set) in the ``conformance_results`` table this module
owns, so the state survives restarts and is shared by replicas; a result already stored is not
written again. Only results for a model the same envelope carries windows of are kept, under the
device its windows name (a device token can speak only for itself), and at most
``limits.max_versions_per_model`` versions per model, so a hostile device cannot grow the labels.

:class:`ConformanceCollector` reads the table at scrape time and exposes ``driftline_edge_conformance_*``
by model and version, and by cohort label (``conformance_cohorts``: firmware, runtime and driver by
default) with the ``cohort_top_n`` most common values and the rest as ``other``. A device id is never
a label. :func:`conformance_summary` is the same state for the status page and the JSON answer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from driftline.conformance import entry_cohort

from .store import Store

__all__ = ["CONFORMANCE_DDL", "RESULTS", "ConformanceBook", "ConformanceCollector", "conformance_summary"]

log = logging.getLogger("driftline.service.conformance")

CONFORMANCE_DDL = """CREATE TABLE IF NOT EXISTS conformance_results (
    model TEXT NOT NULL, version TEXT NOT NULL, source TEXT NOT NULL, digest TEXT NOT NULL,
    evaluated_at DOUBLE PRECISION NOT NULL, received_at DOUBLE PRECISION NOT NULL, entry TEXT NOT NULL,
    PRIMARY KEY (model, version, source, digest))"""

UPSERT = """INSERT INTO conformance_results (model, version, source, digest, evaluated_at, received_at, entry)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (model, version, source, digest) DO UPDATE SET
  entry = CASE WHEN excluded.evaluated_at > conformance_results.evaluated_at THEN excluded.entry
               ELSE conformance_results.entry END,
  received_at = CASE WHEN excluded.evaluated_at > conformance_results.evaluated_at THEN excluded.received_at
                     ELSE conformance_results.received_at END,
  evaluated_at = CASE WHEN excluded.evaluated_at > conformance_results.evaluated_at THEN excluded.evaluated_at
                      ELSE conformance_results.evaluated_at END"""

RESULTS = ("pass", "fail", "error")
"""The ``result`` label: the newest golden run passed, failed its tolerances, or could not run."""


def _result(entry: dict[str, Any]) -> str:
    if entry.get("error"):
        return "error"
    return "pass" if entry.get("passed") else "fail"


class ConformanceBook:
    """Newest golden-set results per device, written through to the store."""

    def __init__(self, store: Store, max_versions_per_model: int = 50, max_age_seconds: float = 7 * 86400.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.max_versions = max_versions_per_model
        self.max_age = max_age_seconds
        self.clock = clock
        self.dropped = 0  # entries refused: a model the envelope has no windows of, or past the version cap
        self.errors = 0  # store writes that failed (the windows are stored; the next envelope tries again)
        self._seen: dict[tuple[str, str, str, str], float] = {}
        self._versions: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        store.create_tables([CONFORMANCE_DDL])
        for model, version in store.query("SELECT DISTINCT model, version FROM conformance_results"):
            self._versions.setdefault(model, set()).add(version)

    def record(self, envelopes: Iterable[Any], now: float) -> int:
        """Keep the conformance entries of stored envelopes (``Envelope`` values); returns rows written."""
        rows = []
        with self._lock:
            for env in envelopes:
                if not env.conformance or not env.profiles:
                    continue
                source = env.profiles[0].key.source
                models = {p.key.model for p in env.profiles}
                if not source or any(p.key.source != source for p in env.profiles):
                    self.dropped += len(env.conformance)
                    continue
                for e in env.conformance:
                    model, version, digest = e["model"], e["model_version"], str(e.get("digest") or "")
                    known = self._versions.setdefault(model, set())
                    if model not in models or (version not in known and len(known) >= self.max_versions):
                        self.dropped += 1
                        continue
                    key = (model, version, source, digest)
                    at = float(e["evaluated_at"])
                    if self._seen.get(key, float("-inf")) >= at:
                        continue
                    known.add(version)
                    self._seen[key] = at
                    rows.append((model, version, source, digest, at, now, json.dumps(e, sort_keys=True)))
        if not rows:
            return 0
        try:
            with self.store.transaction() as tx:
                for row in rows:
                    tx.execute(UPSERT, row)
        except Exception as exc:  # noqa: BLE001 - counted; forgetting them lets the next envelope retry
            with self._lock:
                self.errors += 1
                for row in rows:
                    self._seen.pop((row[0], row[1], row[2], row[3]), None)
            log.warning("storing conformance results failed: %s", exc)
            return 0
        return len(rows)

    def newest(self, model: str | None = None) -> list[tuple[str, str, str, dict[str, Any]]]:
        """(model, version, device, entry): each device's newest entry per model version, among results
        that arrived within ``max_age_seconds``."""
        sql = "SELECT model, version, source, evaluated_at, entry FROM conformance_results WHERE received_at >= ?"
        params: Sequence[Any] = (self.clock() - self.max_age,)
        if model is not None:
            sql += " AND model = ?"
            params = (*params, model)
        best: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = {}
        for m, v, src, at, raw in self.store.query(sql + " ORDER BY model, version, source", params):
            k = (m, v, src)
            if k not in best or float(at) > best[k][0]:
                try:
                    best[k] = (float(at), json.loads(raw))
                except ValueError:
                    continue
        return [(m, v, src, e) for (m, v, src), (_, e) in best.items()]


def conformance_summary(book: ConformanceBook, model: str, cohort_labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per version of ``model``: devices by result, worst differences, and failing cohorts (status page, JSON)."""
    by_version: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for _m, version, device, e in book.newest(model):
        by_version.setdefault(version, []).append((device, e))
    out = []
    for version, items in sorted(by_version.items()):
        results = Counter(_result(e) for _, e in items)
        failing = sorted(((d, e) for d, e in items if _result(e) != "pass"), key=lambda x: x[0])
        cohorts: Counter[tuple[str, str]] = Counter()
        for _, e in failing:
            for label, value in entry_cohort(e).items():
                if label in cohort_labels:
                    cohorts[(label, value)] += 1
        out.append({
            "version": version, "devices": len(items), **{r: results.get(r, 0) for r in RESULTS},
            "max_abs_diff": max((float(e.get("max_abs_diff", 0.0)) for _, e in items), default=0.0),
            "min_top1_agreement": min((e["top1_agreement"] for _, e in items if e.get("top1_agreement") is not None),
                                      default=None),
            "failing_cohorts": [{"cohort_label": k[0], "cohort_value": k[1], "devices": n}
                                for k, n in cohorts.most_common(10)],
            "failing_devices": [{"device": d, "result": _result(e), "max_abs_diff": e.get("max_abs_diff"),
                                 "top1_agreement": e.get("top1_agreement"), "score_ks": e.get("score_ks"),
                                 "error": e.get("error"), "evaluated_at": e.get("evaluated_at"),
                                 "trigger": e.get("trigger"),
                                 "cohort": entry_cohort(e)} for d, e in failing[:20]],
        })
    return out


class ConformanceCollector:
    """``driftline_edge_conformance_*``: read from the store at scrape time (the leader replica only)."""

    def __init__(self, book: ConformanceBook, cohort_labels: Sequence[str], top_n: int,
                 visible: Callable[[], bool] = lambda: True) -> None:
        self.book = book
        self.cohort_labels = tuple(cohort_labels)
        self.top_n = top_n
        self.visible = visible

    def collect(self) -> Any:
        dropped = CounterMetricFamily("driftline_edge_conformance_dropped_entries", "Conformance results refused: "
                                      "no windows of that model in the envelope, or past the version cap")
        dropped.add_metric([], self.book.dropped)
        store_err = CounterMetricFamily("driftline_edge_conformance_store_errors", "Conformance result writes "
                                        "that failed")
        store_err.add_metric([], self.book.errors)
        yield from (dropped, store_err)
        if not self.visible():
            return
        mv = ["model", "version"]
        devices = GaugeMetricFamily("driftline_edge_conformance_devices", "Devices by the result of their newest "
                                    "golden-set run", labels=[*mv, "result"])
        cohort = GaugeMetricFamily("driftline_edge_conformance_cohort_devices", "Devices by cohort and the result "
                                   "of their newest golden-set run", labels=[*mv, "cohort_label", "cohort_value",
                                                                              "result"])
        c_abs = GaugeMetricFamily("driftline_edge_conformance_cohort_max_abs_diff", "Largest absolute output "
                                  "difference from the cloud in a cohort", labels=[*mv, "cohort_label", "cohort_value"])
        fam = {name: GaugeMetricFamily(f"driftline_edge_conformance_{name}", text, labels=mv) for name, text in (
            ("max_abs_diff", "Largest absolute output difference from the cloud, over devices"),
            ("max_rel_diff", "Largest relative output difference from the cloud, over devices"),
            ("score_ks", "Largest KS statistic between device and cloud scores, over devices"),
            ("top1_agreement_ratio", "Smallest top-1 agreement with the cloud, over devices"),
            ("last_run_timestamp_seconds", "When the newest golden-set run happened"))}
        mismatch = GaugeMetricFamily("driftline_edge_conformance_mismatch_devices", "Devices whose outputs differ "
                                     "from the cloud's in shape or dtype", labels=[*mv, "kind"])
        try:
            newest = self.book.newest()
        except Exception as exc:  # noqa: BLE001 - a store outage must not break the scrape
            log.warning("reading conformance results failed: %s", exc)
            return
        counts: Counter[tuple[str, str, str]] = Counter()
        values: Counter[tuple[str, str, str]] = Counter()  # (model, label, value) -> devices, for the top n
        for m, _v, _d, e in newest:
            for label, value in entry_cohort(e).items():
                if label in self.cohort_labels:
                    values[(m, label, value)] += 1
        shown: dict[tuple[str, str], set[str]] = {}
        for (m, label, value), _n in sorted(values.items(), key=lambda kv: (-kv[1], kv[0])):
            names = shown.setdefault((m, label), set())
            if len(names) < self.top_n:
                names.add(value)
        c_counts: Counter[tuple[str, ...]] = Counter()
        c_max: dict[tuple[str, ...], float] = {}
        agg: dict[tuple[str, str], dict[str, float]] = {}
        mism: Counter[tuple[str, str, str]] = Counter()
        for m, v, _d, e in newest:
            res = _result(e)
            counts[(m, v, res)] += 1
            a = agg.setdefault((m, v), {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "score_ks": 0.0,
                                        "top1_agreement_ratio": 1.0, "last_run_timestamp_seconds": 0.0})
            a["last_run_timestamp_seconds"] = max(a["last_run_timestamp_seconds"], float(e["evaluated_at"]))
            if res != "error":
                a["max_abs_diff"] = max(a["max_abs_diff"], float(e.get("max_abs_diff", 0.0)))
                a["max_rel_diff"] = max(a["max_rel_diff"], float(e.get("max_rel_diff", 0.0)))
                a["score_ks"] = max(a["score_ks"], float(e.get("score_ks") or 0.0))
                if e.get("top1_agreement") is not None:
                    a["top1_agreement_ratio"] = min(a["top1_agreement_ratio"], float(e["top1_agreement"]))
            for kind in ("shape", "dtype"):
                if int(e.get(f"{kind}_mismatches", 0)):
                    mism[(m, v, kind)] += 1
            for label, value in entry_cohort(e).items():
                if label not in self.cohort_labels:
                    continue
                value = value if value in shown.get((m, label), ()) else "other"
                c_counts[(m, v, label, value, res)] += 1
                ck = (m, v, label, value)
                c_max[ck] = max(c_max.get(ck, 0.0), float(e.get("max_abs_diff", 0.0)) if res != "error" else 0.0)
        for (m, v), a in agg.items():
            for res in RESULTS:
                devices.add_metric([m, v, res], counts.get((m, v, res), 0))
            for name, val in a.items():
                fam[name].add_metric([m, v], val)
            for kind in ("shape", "dtype"):
                mismatch.add_metric([m, v, kind], mism.get((m, v, kind), 0))
        for k, n in c_counts.items():
            cohort.add_metric(list(k), n)
        for k, val in c_max.items():
            c_abs.add_metric(list(k), val)
        yield from (devices, cohort, c_abs, mismatch, *fam.values())
