"""Every dashboard query, run on a real Prometheus (Debian package) scraping a real Driftline service.

The service (``create_app`` under uvicorn, SQLite) is fed over ``POST /v1/ingest`` with envelopes of
window profiles made from numpy data: two models, one drifting on some devices with missing values
and a critical feature, a canary of it (``PUT /v1/models/cam/canary``) whose arm is slower, raw-row
reservoirs so the Evidently report renders, a malformed envelope, and an internal retraining policy
with one target that answers and one that never does (so requests are delivered and given up).
Prometheus scrapes every second. Then every panel target and template variable of every dashboard is
sent the way Grafana sends it (variables filled, ``$__rate_interval`` by Grafana's rule, range
targets as range queries) and must parse and return data; every metric a dashboard names must be
exposed by the service; and every link into the service opens.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from driftline.conformance import GoldenSet, compare
from driftline.dashboards import checked_in
from driftline.dashboards.promql import expand, label_values_selector, metric_names, queries
from driftline.pairing import PairedSummary
from driftline.performance import PerformanceSummary
from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.service.settings import EvaluationSettings, RetrainSettings, RetrainTarget, ServiceSettings
from driftline.wire import Envelope, encode_envelope
from tests.harness.ports import free_port
from tests.harness.prometheus import PrometheusServer, http_get_json
from tests.service_support import running_service

pytestmark = pytest.mark.prometheus

SCRAPE_S, STEP_S, RANGE_S = 1.0, 2.0, 30.0
VALUES = {"model": "cam", "version": "v1"}
CFG = ProfileConfig(categorical=frozenset({"city", "label"}), reservoir_size=200)


def window(rng: np.random.Generator, model: str, version: str, *, start: float, variant: str = "baseline",
           device: str = "d1", site: str = "oslo", shift: float = 0.0, nan_share: float = 0.0,
           latency_ms: float = 3.0, n: int = 300) -> WindowProfile:
    """One minute of a model's traffic: features, outputs and latency from seeded numpy draws."""
    p = WindowProfile(StreamKey.of(model, version, variant, device, {"site": site}), start, start + 60, CFG)
    b = rng.exponential(1, n)
    b[rng.random(n) < nan_share] = np.nan
    score = rng.beta(5, 2, n)
    p.update({"a": rng.normal(shift, 1, n), "b": b, "city": rng.choice(["x", "y"], n)},
             {"score": score, "label": (score > 0.5).astype(int)}, latency_ms=rng.gamma(4, latency_ms / 4, n))
    return p


def envelope(p: WindowProfile, device: str) -> bytes:
    return encode_envelope(Envelope([p], producer={
        "name": "driftline-sidecar", "version": "test", "device": device, "spool_pending": "3",
        "spool_oldest_age_s": "42.5", "rss_bytes": str(60_000_000), "cpu_seconds": "1.5"}))


class Retrainer:
    """A retraining endpoint on loopback that acknowledges every request."""

    def __init__(self) -> None:
        self.received = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.received += 1
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/retrain"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def shadow_pairs(rng: np.random.Generator, requests: int) -> PairedSummary:
    """What a sidecar folds for ``requests`` mirrored calls of 4 rows: a shadow that mostly agrees."""
    s = PairedSummary()
    for _ in range(requests):
        failed = bool(rng.random() < 0.05)
        s.add_request(False, failed)
        if not failed:
            labels = (rng.beta(5, 2, 4) > 0.5).tolist()
            s.add_rows(4, labels, [(not v) if rng.random() < 0.1 else v for v in labels],
                       rng.normal(0, 0.02, 4).tolist())
    return s


def labelled(rng: np.random.Generator, of: WindowProfile, n: int) -> WindowProfile:
    """Delayed labels joined to ``n`` predictions of window ``of``, as a sidecar ships them: a zero-row
    window of the prediction's window carrying the performance summary."""
    score = rng.beta(5, 2, n)
    p = WindowProfile(of.key, of.start, of.end, CFG)
    p.performance = PerformanceSummary().update(score.tolist(), (rng.random(n) < score).astype(int).tolist())
    return p


def golden_run(passed: bool, at: float, driver: str) -> dict[str, Any]:
    """A device's golden-set result for cam v1, as its sidecar ships it (off by 0.5 on one case when failing)."""
    x = np.arange(12.0).reshape(6, 2)
    g = GoldenSet("cam", "v1", {"x": x}, {"score": x.sum(axis=1)})
    got = x.sum(axis=1) + (0.0 if passed else np.array([0, 0, 0.5, 0, 0, 0]))
    return compare(g, {"score": got}).to_wire(g, trigger="start", evaluated_at=at, cohort={"driver": driver})


def feed(url: str) -> None:
    """References, a canary, drifting and stable windows, a slower canary arm and one malformed envelope."""
    rng = np.random.default_rng(7)
    now = time.time()
    with httpx.Client(base_url=url, timeout=30) as c:
        for model, version in (("cam", "v1"), ("cam", "v2"), ("kiosk", "v1")):
            ref = window(rng, model, version, start=0.0, variant="reference", device="training", n=4000)
            c.put(f"/v1/models/{model}/versions/{version}/reference", content=envelope(ref, "training")
                  ).raise_for_status()
        c.put("/v1/models/cam/canary", json={"baseline_version": "v1", "canary_version": "v2", "min_rows": 200,
                                              "min_duration_seconds": 5}).raise_for_status()
        for i in range(6):
            past, future = now - 420 + i * 60, now + i * 60  # drift looks back; the canary counts from its start
            for start in (past, future):
                for dev, site, shift, nans in (("d1", "oslo", 0.0, 0.0), ("d2", "lima", 1.5, 0.3)):
                    p = window(rng, "cam", "v1", start=start, device=dev, site=site, shift=shift, nan_share=nans)
                    c.post("/v1/ingest", content=envelope(p, dev)).raise_for_status()
                    c.post("/v1/ingest", content=envelope(labelled(rng, p, 100), dev)).raise_for_status()
            p = window(rng, "cam", "v2", start=future, variant="canary", device="d3", latency_ms=9.0)
            c.post("/v1/ingest", content=envelope(p, "d3")).raise_for_status()
            p = window(rng, "kiosk", "v1", start=past, device="k1", site="rome")
            c.post("/v1/ingest", content=envelope(p, "k1")).raise_for_status()
            p = window(rng, "cam", "v3", start=past, variant="shadow", device="d1", latency_ms=6.0)
            p.shadow = shadow_pairs(rng, 40).to_dict()
            c.post("/v1/ingest", content=envelope(p, "d1")).raise_for_status()
        for dev, driver, passed in (("d1", "drv-1", True), ("d2", "drv-2", False)):  # golden-set runs
            p = window(rng, "cam", "v1", start=now - 90, device=dev)
            env = Envelope([p], producer={"name": "driftline-sidecar", "device": dev},
                           conformance=[golden_run(passed, now - 60, driver)])
            c.post("/v1/ingest", content=encode_envelope(env)).raise_for_status()
        assert c.post("/v1/ingest", content=b"not an envelope").status_code == 400


@dataclass
class Live:
    prometheus: PrometheusServer
    service_url: str

    def instant(self, expr: str) -> list[dict[str, Any]]:
        return self.prometheus.query(expr)

    def range(self, expr: str) -> list[dict[str, Any]]:
        end = time.time()
        qs = urllib.parse.urlencode({"query": expr, "start": end - RANGE_S, "end": end, "step": STEP_S})
        body = http_get_json(f"{self.prometheus.url}/api/v1/query_range?{qs}")
        return list(body["data"]["result"])


def check_queries(live: Live, boards: dict[str, dict], values: dict[str, str]) -> list[str]:
    """Run every query of ``boards`` as Grafana would; one line per query that fails to parse or is empty."""
    failures = []
    for name, d in boards.items():
        for q in queries(name, d):
            expr = expand(q.expr, values, step_seconds=STEP_S, scrape_seconds=SCRAPE_S, range_seconds=RANGE_S)
            selector = label_values_selector(expr)
            try:
                result = live.instant(selector or expr) if q.instant else live.range(expr)
            except Exception as exc:  # noqa: BLE001 - Prometheus refused the query: the dashboard is wrong
                failures.append(f"{name} {q.where}: {expr!r} refused: {exc}")
                continue
            if not result:
                failures.append(f"{name} {q.where}: {expr!r} returned no data")
            elif selector is not None:
                label = q.expr.rsplit(",", 1)[1].strip(" )")
                wanted = values.get(label, "")
                if re.fullmatch(r"[\w.-]+", wanted) and wanted not in {r["metric"].get(label) for r in result}:
                    failures.append(f"{name} {q.where}: no {label}={wanted!r} among its values")
    return failures


def check_metrics_exposed(live: Live, boards: dict[str, dict], exposition: str) -> list[str]:
    """Metric names the dashboards use that the service's /metrics lacks or Prometheus has no series of."""
    names = {m for name, d in boards.items() for q in queries(name, d)
             for m in metric_names(label_values_selector(q.expr) or q.expr)}
    exposed = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", exposition, flags=re.M))
    missing = [f"{m}: not in the service's /metrics" for m in sorted(names - exposed)]
    missing += [f"{m}: no series in Prometheus" for m in sorted(names & exposed) if not live.instant(f"group({m})")]
    return missing


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, prometheus_binaries) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("dash-prom")
    hook = Retrainer()
    port = free_port()
    settings = ServiceSettings(
        database_url=f"sqlite:///{tmp / 'service.sqlite'}", port=port, read_token="dash-read",
        evaluation=EvaluationSettings(current_window_seconds=7200, interval_seconds=0.5, drift_share_threshold=0.3,
                                      critical_features={"cam": ["a"]}),
        retrain=RetrainSettings(internal_policy=True, sustained_seconds=0, deadline_seconds=1, secret="k",
                                backoff_initial_seconds=0.2, backoff_max_seconds=0.4, timeout_seconds=2,
                                targets=[RetrainTarget(name="trainer", url=hook.url),
                                         RetrainTarget(name="offline", url=f"http://127.0.0.1:{free_port()}/x")]))
    (tmp / "prom.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": f"{SCRAPE_S:g}s", "evaluation_interval": f"{SCRAPE_S:g}s"},
        "scrape_configs": [{"job_name": "driftline", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]}))
    prom = PrometheusServer(tmp / "prom", tmp / "prom.yml", binaries=prometheus_binaries)
    try:
        with running_service(settings) as url:
            feed(url)
            prom.start()
            lv = Live(prom, url)
            for expr in ("driftline_canary_verdict", "driftline_shadow_verdict", 'driftline_retrain_requests_total{result="given_up"}',
                         'driftline_retrain_requests_total{result="delivered"}', "driftline_reference_info"):
                prom.wait_for(expr, timeout=60)
            yield lv
    finally:
        prom.stop()
        hook.close()


def _until_clean(check: Any, timeout: float = 30.0) -> list[str]:
    """Re-run a check while samples accumulate (rates need two scrapes); bounded, returns the last failures."""
    deadline = time.monotonic() + timeout
    while True:
        failures = check()
        if not failures or time.monotonic() > deadline:
            return failures
        time.sleep(1.0)


def test_every_panel_query_parses_and_returns_data(live: Live) -> None:
    boards = {name: json.loads(text) for name, text in checked_in().items()}
    assert _until_clean(lambda: check_queries(live, boards, VALUES)) == []
    edge_all = {"edge": boards["edge"]}  # the edge board's "All" value is the regex .*
    assert check_queries(live, edge_all, {"model": ".*"}) == []


def test_every_metric_the_dashboards_name_is_exposed_by_the_service(live: Live) -> None:
    boards = {name: json.loads(text) for name, text in checked_in().items()}
    exposition = httpx.get(f"{live.service_url}/metrics", timeout=30).text
    assert check_metrics_exposed(live, boards, exposition) == []


def test_a_dashboard_naming_a_metric_the_service_lacks_fails(live: Live) -> None:
    bad = {"bad": {"panels": [{"title": "ghost", "type": "timeseries", "targets": [
        {"refId": "A", "expr": 'sum by (model) (rate(driftline_ghost_total{model="$model"}[$__rate_interval]))'}]},
        {"title": "typo", "type": "stat", "targets": [{"refId": "A", "expr": "sum(driftline_dataset_drift{", "instant": True}]}]}}
    failures = check_queries(live, bad, VALUES)
    assert len(failures) == 2 and "no data" in failures[0] and "refused" in failures[1]
    exposition = httpx.get(f"{live.service_url}/metrics", timeout=30).text
    assert check_metrics_exposed(live, bad, exposition) == ["driftline_ghost_total: not in the service's /metrics"]


def _links(d: dict) -> list[str]:
    out = [lk["url"] for lk in d.get("links", [])]
    for p in d["panels"]:
        out += [lk["url"] for lk in p.get("links", [])]
        out += [lk["url"] for lk in (p.get("fieldConfig") or {}).get("defaults", {}).get("links", [])]
    return out


def test_links_open_the_report_status_page_and_model_detail(live: Live) -> None:
    boards = {name: json.loads(text) for name, text in checked_in().items()}
    uids = {d["uid"]: d for d in boards.values()}
    fill = {"service_url": live.service_url, "__field.labels.model": "cam", "__data.fields.model": "cam",
            "__field.labels.version": "v1", "__data.fields.version": "v1", **VALUES}
    opened = set()
    with httpx.Client(timeout=120, headers={"Authorization": "Bearer dash-read"}) as c:  # report needs a token
        for name, d in boards.items():
            for url in _links(d):
                if url.startswith("/d/"):  # another dashboard: it exists and has the variables the link sets
                    target = uids[url.split("/")[2]]
                    names = {v["name"] for v in target["templating"]["list"]}
                    assert set(re.findall(r"var-([a-z_]+)=", url)) <= names, (name, url)
                    continue
                real = re.sub(r"\$\{([^}:]+)\}|\$(\w+)", lambda m: fill[m.group(1) or m.group(2)], url)
                assert real.startswith(live.service_url), (name, url)
                if real not in opened:
                    r = c.get(real)
                    assert r.status_code == 200, (name, url, real, r.status_code, r.text[:300])
                    opened.add(real)
    paths = {urllib.parse.urlsplit(u).path for u in opened}
    assert {"/", "/models/cam", "/v1/models/cam/report.html", "/v1/models/cam/canary"} <= paths
