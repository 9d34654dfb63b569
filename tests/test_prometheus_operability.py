"""Restarts and replicas on a real Prometheus (Debian package) scraping real services.

* A service restarted mid-run: ``DriftlineStaleModel`` and the drift rules (the real rule file, only
  ``for:`` shortened) keep firing with the same ``activeAt``; a control rule written the old way (no
  ``last_over_time``) is reset by the same restart, so the restart really left a gap.
* Two replicas on one PostgreSQL, fed alternately, scraped by one Prometheus, against one replica fed
  the same envelopes and scraped by another: every dashboard query returns the single-replica answer.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from driftline.dashboards import checked_in
from driftline.dashboards.promql import expand, label_values_selector, queries
from driftline.service.settings import EvaluationSettings, RetrainSettings, RetrainTarget, ServiceSettings
from driftline.wire import Envelope, encode_envelope
from tests.harness.ports import free_port
from tests.harness.prometheus import PrometheusServer, http_get_json
from tests.service_support import running_service
from tests.test_dashboards_prometheus import Retrainer, envelope, golden_run, labelled, shadow_pairs, window

pytestmark = pytest.mark.prometheus

ROOT = Path(__file__).resolve().parent.parent
SCRAPE_S = 1.0


def prom_config(path: Path, targets: list[str], rule_file: Path | None = None) -> Path:
    cfg: dict[str, Any] = {
        "global": {"scrape_interval": f"{SCRAPE_S:g}s", "evaluation_interval": f"{SCRAPE_S:g}s",
                   "scrape_timeout": "900ms"},
        "scrape_configs": [{"job_name": "driftline", "static_configs": [{"targets": targets}]}]}
    if rule_file is not None:
        cfg["rule_files"] = [str(rule_file)]
    path.write_text(yaml.safe_dump(cfg))
    return path


def fast_rules(path: Path) -> Path:
    """The real rule file with every ``for:`` at 3s, plus a control rule without ``last_over_time``."""
    doc = yaml.safe_load((ROOT / "alerts" / "driftline-rules.yml").read_text())
    for g in doc["groups"]:
        for r in g["rules"]:
            r["for"] = "3s"
    doc["groups"].append({"name": "control", "rules": [{
        "alert": "ControlStaleWithoutBridge", "for": "3s",
        "expr": "time() - max by (model) (driftline_last_window_end_timestamp_seconds) > 900"}]})
    path.write_text(yaml.safe_dump(doc))
    return path


def traffic(now: float, *, stale: bool = False) -> list[bytes]:
    """Drifting and stable windows of two models and a canary arm, as envelope bytes (built once, so
    every setup receives the very same bytes)."""
    rng = np.random.default_rng(11)
    out = []
    base = now - (1800 if stale else 420)
    for i in range(6):
        for dev, site, shift, nans in (("d1", "oslo", 0.0, 0.0), ("d2", "lima", 1.5, 0.3)):
            p = window(rng, "cam", "v1", start=base + i * 60, device=dev, site=site, shift=shift, nan_share=nans)
            out.append(envelope(p, dev))
            out.append(envelope(labelled(rng, p, 100), dev))
        if not stale:
            # the canary's windows end after any setup's experiment start (its PUT, minutes apart per setup)
            out.append(envelope(window(rng, "cam", "v2", start=now + 900 + i * 60, variant="canary", device="d3",
                                       latency_ms=9.0), "d3"))
            out.append(envelope(window(rng, "cam", "v1", start=now + 900 + i * 60, device="d1", site="oslo"), "d1"))
        out.append(envelope(window(rng, "kiosk", "v1", start=base + i * 60, device="k1", site="rome"), "k1"))
        if not stale:  # a shadow of cam, its paired summaries riding its windows as a sidecar ships them
            p = window(rng, "cam", "v3", start=base + i * 60, variant="shadow", device="d1", latency_ms=6.0)
            p.shadow = shadow_pairs(rng, 40).to_dict()
            out.append(envelope(p, "d1"))
    return out


REFERENCES = [(m, v, envelope(window(np.random.default_rng(5), m, v, start=0.0, variant="reference",
                                     device="training", n=4000), "training"))
              for m, v in (("cam", "v1"), ("cam", "v2"), ("kiosk", "v1"))]


def golden_envelopes(now: float) -> list[bytes]:
    rng = np.random.default_rng(13)
    return [encode_envelope(Envelope([window(rng, "cam", "v1", start=now - 90, device=dev)],
                                     producer={"name": "driftline-sidecar", "device": dev},
                                     conformance=[golden_run(passed, now - 60, driver)]))
            for dev, driver, passed in (("d1", "drv-1", True), ("d2", "drv-2", False))]


GOLDEN_RUNS = golden_envelopes(time.time())


def feed(urls: list[str], envelopes: list[bytes], golden: Sequence[bytes] = ()) -> None:
    """References, envelope i to ``urls[i % len(urls)]`` (a load balancer), golden-set runs, a canary, one bad
    envelope."""
    with httpx.Client(timeout=30) as c:
        for model, version, body in REFERENCES:
            c.put(f"{urls[0]}/v1/models/{model}/versions/{version}/reference", content=body).raise_for_status()
        for i, body in enumerate(envelopes):
            c.post(f"{urls[i % len(urls)]}/v1/ingest", content=body).raise_for_status()
        # after the data: a canary decision is sticky, so one judged while envelopes were still arriving
        # would freeze fewer rows in one setup than in the other
        c.put(f"{urls[-1]}/v1/models/cam/canary", json={"baseline_version": "v1", "canary_version": "v2",
                                                       "min_rows": 200, "min_duration_seconds": 5}).raise_for_status()
        for i, body in enumerate(golden):  # each device's newest golden-set run, one per replica
            c.post(f"{urls[i % len(urls)]}/v1/ingest", content=body).raise_for_status()
        assert c.post(f"{urls[0]}/v1/ingest", content=b"not an envelope").status_code == 400


def active(prom: PrometheusServer) -> dict[tuple[str, str], dict[str, Any]]:
    return {(a["labels"]["alertname"], a["labels"].get("model", "")): a for a in prom.alerts()}


def test_a_restart_mid_run_leaves_the_stale_and_drift_alerts_firing(tmp_path, prometheus_binaries) -> None:
    port = free_port()
    settings = ServiceSettings(
        database_url=f"sqlite:///{tmp_path / 'service.sqlite'}", port=port,
        evaluation=EvaluationSettings(current_window_seconds=7200, interval_seconds=0.5, drift_share_threshold=0.3,
                                      critical_features={"cam": ["a"]}))
    rules = fast_rules(tmp_path / "rules.yml")
    prom = PrometheusServer(tmp_path / "prom", prom_config(tmp_path / "prom.yml", [f"127.0.0.1:{port}"], rules),
                            binaries=prometheus_binaries)
    wanted = [("DriftlineStaleModel", "cam"), ("DriftlineStaleModel", "kiosk"), ("DriftlineDatasetDrift", "cam"),
              ("DriftlineCriticalFeatureDrift", "cam"), ("DriftlineMissingRateJump", "cam"),
              ("ControlStaleWithoutBridge", "cam")]
    try:
        with running_service(settings) as url:
            feed([url], traffic(time.time(), stale=True))
            prom.start()
            deadline = time.monotonic() + 90
            while not all(active(prom).get(w, {}).get("state") == "firing" for w in wanted):
                assert time.monotonic() < deadline, sorted((k, a["state"]) for k, a in active(prom).items())
                time.sleep(0.5)
            before = active(prom)
            time.sleep(2 * SCRAPE_S)
        time.sleep(3 * SCRAPE_S)  # down for a few scrapes: Prometheus marks every series stale
        assert prom.query('up{job="driftline"} == 0'), "the restart left no failed scrape"
        with running_service(settings):  # the same store and port; nothing ingested since
            deadline = time.monotonic() + 30
            while not prom.query('up{job="driftline"} == 1'):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            time.sleep(4 * SCRAPE_S + 2)  # several rule evaluations after the restart
            after = active(prom)
            gauges = prom.query("driftline_last_window_end_timestamp_seconds")
    finally:
        prom.stop()
    assert {g["metric"]["model"] for g in gauges} == {"cam", "kiosk"}  # rebuilt from the store at start
    for w in wanted[:-1]:
        assert after[w]["state"] == "firing", w
        assert after[w]["activeAt"] == before[w]["activeAt"], f"{w} was reset by the restart"
    # the control, read without last_over_time, lost its state: the gap was real
    ctl = after.get(("ControlStaleWithoutBridge", "cam"))
    assert ctl is None or ctl["activeAt"] != before[("ControlStaleWithoutBridge", "cam")]["activeAt"]


# ---- two replicas ------------------------------------------------------------------------------------

# Values that depend on when an envelope arrived, not on what the fleet did: ingest time minus window end.
TIME_OF_ARRIVAL = {"driftline_ingest_delivery_lag_seconds": 60.0}
# Scores from merged KLL sketches: each process merges with its own random compaction bits, so two
# processes given the same windows differ by the sketch's error (a p99 latency ratio by up to ~10%).
SKETCH_SCORES = ("drift_score", "shift_score", "canary_effect", "canary_p_value", "drift_share", "missing_ratio",
                 "shadow_latency_p99", "performance_roc_auc")


def instant_at(prom: PrometheusServer, expr: str, at: float) -> list[dict[str, Any]]:
    qs = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
    body = http_get_json(f"{prom.url}/api/v1/query?{qs}")
    assert body["status"] == "success", body
    return list(body["data"]["result"]) if body["data"]["resultType"] == "vector" else [
        {"metric": {}, "value": body["data"]["result"]}]


def answer(result: list[dict[str, Any]]) -> dict[str, float]:
    out = {}
    for r in result:
        labels = {k: v for k, v in r["metric"].items() if k not in ("instance", "job")}
        out[json.dumps(labels, sort_keys=True)] = float(r["value"][1])
    return out


def same(expr: str, one: dict[str, float], two: dict[str, float]) -> str | None:
    if one.keys() != two.keys():
        return f"{expr!r}: series {sorted(one)} vs {sorted(two)}"
    tol = next((t for name, t in TIME_OF_ARRIVAL.items() if name in expr), 0.0)
    sketch = any(s in expr for s in SKETCH_SCORES)
    for k, a in one.items():
        b = two[k]
        if math.isnan(a) and math.isnan(b):
            continue
        limit = max(tol, 1e-9 * max(abs(a), 1.0), (0.15 * abs(a) + 0.01) if sketch else 0.0)
        if not abs(a - b) <= limit:
            return f"{expr!r} {k}: single replica {a} vs two replicas {b}"
    return None


def every_target_up_at(proms: dict[str, PrometheusServer], targets: dict[str, int]) -> float:
    """The latest recent instant at which every Prometheus's last scrape of every target succeeded.

    A scrape that outlasts its timeout on a busy machine marks that target's series stale until the
    next one, so an instant query just then would miss a replica for a reason that is the machine's,
    not the service's. Looking back a second at a time (at most a minute) finds an instant without
    such a gap; the comparison itself stays exact.
    """
    now = time.time() - 1.0
    for back in range(60):
        at = now - back * SCRAPE_S
        if all(answer(instant_at(prom, "sum(up)", at)) == {"{}": float(targets[name])}
               for name, prom in proms.items()):
            return at
    raise AssertionError(f"no instant in the last minute with every target scraped: {targets}")


def test_two_replicas_on_postgres_give_every_dashboard_query_the_single_replica_answer(
        tmp_path, prometheus_binaries, postgres_server) -> None:
    hook = Retrainer()
    evaluation = EvaluationSettings(current_window_seconds=7200, interval_seconds=0.5, drift_share_threshold=0.3,
                                    critical_features={"cam": ["a"]})
    retrain = RetrainSettings(internal_policy=True, sustained_seconds=0, secret="k",
                              targets=[RetrainTarget(name="trainer", url=hook.url)])
    setups = {"single": [postgres_server.new_database("driftline_one")],
              "pair": [postgres_server.new_database("driftline_two")] * 2}
    proms: dict[str, PrometheusServer] = {}
    envelopes = traffic(time.time())
    try:
        with ExitStack() as stack:
            urls: dict[str, list[str]] = {}
            for name, dbs in setups.items():
                urls[name] = [stack.enter_context(running_service(ServiceSettings(
                    database_url=db, port=0, evaluation=evaluation, retrain=retrain))) for db in dbs]
                feed(urls[name], envelopes, GOLDEN_RUNS)
                targets = [u.removeprefix("http://") for u in urls[name]]
                proms[name] = PrometheusServer(tmp_path / name, prom_config(tmp_path / f"{name}.yml", targets),
                                               binaries=prometheus_binaries).start()
            # each replica served half of the envelopes: the pair's counters must add up
            for u in urls["pair"]:
                s = httpx.get(f"{u}/metrics", timeout=30).text
                assert 'driftline_ingest_envelopes_total{result="accepted",transport="http"} 25.0' in s
            settle = time.monotonic() + 60
            for name, prom in proms.items():  # both scraped, evaluated, device reports in the store
                while not (prom.query('driftline_canary_verdict') and prom.query("driftline_dataset_drift")
                           and prom.query('driftline_retrain_requests_total{result="delivered"} > 0')
                           and prom.query("driftline_edge_devices_reporting") and prom.query("driftline_shadow_verdict")):
                    assert time.monotonic() < settle, f"{name}: no fleet state scraped"
                    time.sleep(0.5)
            time.sleep(8 * SCRAPE_S)  # leader refreshes and a few scrapes after the last of them
            at = every_target_up_at(proms, {name: len(u) for name, u in urls.items()})
            boards = {name: json.loads(text) for name, text in checked_in().items()}
            exprs = []
            for name, d in boards.items():
                for q in queries(name, d):
                    values = {"model": "cam", "version": "v1"}
                    e = expand(q.expr, values, step_seconds=2.0, scrape_seconds=SCRAPE_S, range_seconds=30.0)
                    exprs.append(label_values_selector(e) or e)
            # the counters themselves, summed over replicas
            exprs += ["sum by (transport, result) (driftline_ingest_envelopes_total)",
                      "sum by (transport) (driftline_ingest_bytes_total)",
                      "sum by (model, target, result) (driftline_retrain_requests_total)",
                      "sum by (model, version, variant) (driftline_observations_total)",
                      "sum by (model) (driftline_edge_sidecar_cpu_seconds_total)",
                      "sum by (model, cohort_label, cohort_value) (driftline_edge_devices_reporting)"]
            failures, empty = [], 0
            for expr in exprs:
                one = answer(instant_at(proms["single"], expr, at))
                two = answer(instant_at(proms["pair"], expr, at))
                empty += not one
                if expr == "count by (version) (driftline_build_info)":  # the replica count, by design
                    assert set(one.values()) == {1.0} and set(two.values()) == {2.0}
                    continue
                problem = same(expr, one, two)
                if problem:
                    failures.append(problem)
            assert failures == []
            assert empty <= 2, "most dashboard queries must return data for the comparison to mean something"
            leaders = [float(r["value"][1]) for r in proms["pair"].query("driftline_leader")]
            assert sorted(leaders) == [0.0, 1.0]
    finally:
        for prom in proms.values():
            prom.stop()
        hook.close()
