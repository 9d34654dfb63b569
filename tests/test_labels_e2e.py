"""Delayed labels end to end: a real sidecar and SDK against the real service on loopback.

Predictions are observed with ids, labels arrive later through the SDK (``Monitor.label``), the
sidecar's ``POST /v1/labels`` and the service's batch upload; the service reports performance per
window and cohort, exposes it on /metrics and starts a retraining when a bound is breached.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.metrics import accuracy_score, f1_score

from driftline.edge_sidecar.monitor import Monitor
from driftline.edge_sidecar.runner import Sidecar
from driftline.edge_sidecar.settings import load_settings
from driftline.service.app import create_app
from driftline.service.settings import RetrainTarget, ServiceSettings
from tests.retrain_support import RetrainSink
from tests.service_support import serving
from tests.sidecar_support import wait_until


def call(url: str, method: str, path: str, body: Any = None, token: str | None = "w-token",
         raw: bytes | None = None, ctype: str = "application/json") -> tuple[int, Any]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": ctype, **({"Authorization": f"Bearer {token}"} if token else {})}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        text = resp.read()
    finally:
        conn.close()
    if (resp.getheader("Content-Type") or "").startswith("application/json"):
        return resp.status, json.loads(text)
    return resp.status, text.decode()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, Any, RetrainSink]]:
    sink = RetrainSink("k-secret-for-tests")
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 's.sqlite'}", port=0, api_token="w-token",
                               retrain={"targets": [RetrainTarget(name="t", url=sink.url)], "secret": "k-secret-for-tests",
                                        "sustained_seconds": 0, "backoff_initial_seconds": 0.05},
                               performance={"min_labelled": 10, "thresholds": {"accuracy": 0.99}})
    app = create_app(settings, background=False)
    with serving(app, settings) as url:
        app.state.parts.dispatcher.start()  # background=False: the test runs the evaluator's passes itself
        try:
            yield url, app, sink
        finally:
            app.state.parts.dispatcher.stop()
    sink.close()


def _perf(url: str, model: str, version: str = "1") -> list[dict[str, Any]]:
    status, body = call(url, "GET", f"/v1/models/{model}/versions/{version}/performance")
    assert status == 200, body
    return body["windows"]


def test_sidecar_and_sdk_labels_reach_the_service_per_window_and_cohort(
        tmp_path: Path, service: tuple[str, Any, RetrainSink]) -> None:
    url, app, sink = service
    rng = np.random.default_rng(7)
    settings = load_settings(None, device="dev-1", model="fraud", model_version="1",
                             window={"seconds": 60, "lateness_seconds": 30, "tick_seconds": 0.05},
                             spool={"path": str(tmp_path / "spool"), "fsync": False},
                             transport={"http": {"url": url, "token": "w-token", "timeout_seconds": 5}},
                             shipper={"backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2},
                             api={"port": 0}, labels={"enabled": True, "output": "score", "flush_seconds": 0.1})
    sc = Sidecar(settings).start()
    try:
        port = sc.api.port
        scores = rng.random(200)
        ys = (rng.random(200) < scores).astype(int)
        now = time.time()
        rows = [{"features": {"x": float(i)}, "outputs": {"score": float(s)}, "request_id": f"r{i}",
                 "cohort": {"hw": "orin" if i % 2 else "nano"}, "event_time": now}
                for i, s in enumerate(scores)]
        status, body = call(f"http://127.0.0.1:{port}", "POST", "/v1/observe", {"rows": rows})
        assert status == 200, body
        labels = [{"id": f"r{i}", "label": int(y)} for i, y in enumerate(ys)] + [{"id": "nobody", "label": 1}]
        assert wait_until(lambda: sc.monitor.labels.snapshot()["predictions"] == 200)
        status, body = call(f"http://127.0.0.1:{port}", "POST", "/v1/labels", {"labels": labels})
        assert (status, body) == (200, {"received": 201, "joined": 200, "unknown": 1})
        for bad in ({"labels": [{"id": "r1", "label": "yes"}]}, {"labels": [{"id": [1], "label": 1}]},
                    {"labels": [{"id": "r1", "label": 3}]}, {"labels": []}, {"labels": [{"id": "r1"}]}):
            status, body = call(f"http://127.0.0.1:{port}", "POST", "/v1/labels", bad)
            assert status == 400 and body["error"] in ("malformed", "wrong_type", "bad_id"), (bad, body)
        status, _ = call(f"http://127.0.0.1:{port}", "POST", "/v1/labels", raw=b"\xff{", ctype="application/json")
        assert status == 400
        assert sum(sc.monitor.labels.snapshot()["rejected_labels"].values()) == 6

        # the SDK in another process's place: its own spool and shipper to the same service
        with Monitor.configure(model="fraud", model_version="1", device="sdk", service_url=url, token="w-token",
                               spool_dir=str(tmp_path / "sdk"), labels=True, label_flush_seconds=0.1, lateness_seconds=30) as m:
            for i in range(20):
                m.observe({"x": 1.0}, 0.9, request_id=f"s{i}", cohort={"hw": "orin"}, event_time=now)
            m.flush()
            assert [m.label(f"s{i}", 1) for i in range(20)] == [True] * 20
            assert not m.label("s0", 1)  # a second label for the same prediction is not joined
        bg = app.state.background

        def landed() -> bool:
            wins = _perf(url, "fraud")
            return sum(w["labelled"] for w in wins if w["cohort"] == "all") == 220

        assert wait_until(landed, 30)
    finally:
        sc.stop(grace=5)
    windows = _perf(url, "fraud")
    starts = {w["start"] for w in windows}
    assert starts == {float(np.floor(now / 60) * 60)}  # the predictions' window, whatever the labels' time
    by_cohort = {w["cohort"]: w for w in windows}
    nano = np.arange(200) % 2 == 0
    pred = (scores >= 0.5).astype(int)
    assert by_cohort["hw=nano"]["labelled"] == 100
    assert by_cohort["hw=nano"]["accuracy"] == pytest.approx(accuracy_score(ys[nano], pred[nano]))
    assert by_cohort["hw=nano"]["f1"] == pytest.approx(f1_score(ys[nano], pred[nano]))
    all_y = np.r_[ys, np.ones(20)]
    all_p = np.r_[pred, np.ones(20)]
    assert by_cohort["all"]["accuracy"] == pytest.approx(accuracy_score(all_y, all_p))

    # the background pass: gauges, the bound (accuracy >= 0.99) breached, a retraining requested
    bg.run_once()
    status, text = call(url, "GET", "/metrics", token=None)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    acc = {s.labels["cohort"]: s.value for s in fams["driftline_model_performance_accuracy_ratio"].samples}
    assert acc["all"] == pytest.approx(by_cohort["all"]["accuracy"])
    below = [s.value for s in fams["driftline_model_performance_below_threshold"].samples
             if s.labels["model"] == "fraud"]
    assert below == [1.0]
    bg.run_once()  # sustained_seconds = 0: the breach has lasted long enough
    (body,) = sink.wait_accepted(1, 20)
    assert body["reason"] == "performance below threshold" and body["model"] == "fraud"
    assert body["trigger"]["breached"] == ["accuracy"] and body["trigger"]["performance"]["labelled"] == 220


def test_the_service_batch_upload_is_exactly_once_and_refuses_bad_labels(
        service: tuple[str, Any, RetrainSink]) -> None:
    url, app, _ = service
    rng = np.random.default_rng(9)
    y = rng.normal(5, 2, 300)
    p = y + rng.normal(0, 0.5, 300)
    t0 = 1_700_000_000.0
    batch = {"batch_id": str(uuid.uuid4()), "task": "regression", "window_seconds": 300,
             "labels": [{"id": f"p{i}", "score": float(p[i]), "label": float(y[i]), "time": t0 + i,
                         "cohort": {"site": "a" if i < 150 else "b"}} for i in range(300)]}
    path = "/v1/models/price/versions/2/labels"
    status, body = call(url, "POST", path, batch)
    assert status == 200 and body["result"] == "accepted" and body["windows"] == 3, body
    status, body = call(url, "POST", path, batch)  # a retried upload: merged once
    assert status == 200 and body["result"] == "duplicate"
    wins = [w for w in _perf(url, "price", "2") if w["cohort"] == "all"]
    assert sum(w["labelled"] for w in wins) == 300
    w0 = next(w for w in wins if w["start"] == np.floor(t0 / 300) * 300)
    first = np.arange(300) < (np.floor(t0 / 300) * 300 + 300 - t0)
    assert w0["mae"] == pytest.approx(np.mean(np.abs(p[first] - y[first])), rel=1e-9)
    assert w0["rmse"] == pytest.approx(np.sqrt(np.mean((p[first] - y[first]) ** 2)), rel=1e-9)

    good = {"id": "a", "score": 0.5, "label": 1, "time": t0}
    for bad, code in (({"labels": [good, good]}, 422), ({"labels": [{**good, "label": 2}]}, 422),
                      ({"labels": [{**good, "score": 1.5}]}, 422), ({"labels": []}, 422),
                      ({"labels": [{**good, "extra": 1}]}, 422), ({"labels": [{**good, "id": "x" * 300}]}, 422),
                      ({"labels": [good] * 10_001}, 422), ({"labels": [{**good, "time": "soon"}]}, 422)):
        status, body = call(url, "POST", "/v1/models/clf/versions/1/labels", bad)
        assert status == code, (bad if len(str(bad)) < 200 else "big", body)
    status, _ = call(url, "POST", "/v1/models/clf/versions/1/labels", {"labels": [good]}, token=None)
    assert status == 401
    assert _perf(url, "clf") == []
