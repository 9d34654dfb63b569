"""The service over real HTTP: exactly-once ingest, errors, auth, stores, metrics, canary, retraining."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest

from driftline.edge_sidecar.monitor import Monitor
from driftline.profile import ProfileConfig
from driftline.service.settings import EvaluationSettings, RetrainSettings, RetrainTarget, ServiceSettings
from tests.service_support import envelope, reference_bytes, running_service, window


def settings(tmp_path, **kw) -> ServiceSettings:
    base = dict(database_url=f"sqlite:///{tmp_path / 'svc.sqlite'}", port=0,
                evaluation=EvaluationSettings(current_window_seconds=3600, interval_seconds=3600))
    base.update(kw)
    return ServiceSettings(**base)


def feed(url: str, rng: np.random.Generator, model: str = "m", shift_devices: tuple[str, ...] = ("d2",)) -> int:
    now = time.time()
    rows = 0
    with httpx.Client(base_url=url) as c:
        assert c.put(f"/v1/models/{model}/versions/v1/reference", content=reference_bytes(rng, model, "v1")).status_code == 200
        for i in range(6):
            for dev in ("d1", "d2", "d3"):
                p = window(rng, model, "v1", device=dev, start=now - 600 + i * 60, shift=1.5 if dev in shift_devices else 0)
                rows += p.rows
                r = c.post("/v1/ingest", content=envelope(p, device=dev))
                assert r.status_code == 200 and r.json()["result"] == "accepted"
    return rows


def test_ingest_is_exactly_once_and_errors_are_json(tmp_path) -> None:
    rng = np.random.default_rng(0)
    with running_service(settings(tmp_path)) as url, httpx.Client(base_url=url) as c:
        rows = feed(url, rng)
        data = envelope(window(rng, "m", "v1", start=time.time() - 60))
        first, again = c.post("/v1/ingest", content=data), c.post("/v1/ingest", content=data)
        assert first.json()["result"] == "accepted" and again.json()["result"] == "duplicate"
        models = c.get("/v1/models").json()["models"]
        assert models[0]["rows"] == rows + 300  # the duplicate was not counted
        for bad, status in ((b"garbage", 400), (b"", 400), (data[:-3], 400)):
            r = c.post("/v1/ingest", content=bad)
            assert r.status_code == status and "error" in r.json()
        big = c.post("/v1/ingest", content=b"x" * (5 * 1024 * 1024))
        assert big.status_code == 413 and "limit" in big.json()["error"]
        assert c.get("/v1/models/nope/drift").status_code == 404
        assert c.get("/v1/models/m/drift", params={"since": 10, "until": 5}).status_code == 400
        assert c.get("/v1/models/m/drift", params={"since": "abc"}).status_code == 422
        assert c.put("/v1/models/m/versions/v9/reference", content=b"nope").status_code == 400
        metrics = c.get("/metrics").text
        assert 'driftline_ingest_envelopes_total{result="duplicate",transport="http"} 1.0' in metrics
        assert 'driftline_ingest_envelopes_total{result="rejected",transport="http"}' in metrics


def test_drift_devices_history_and_metrics(tmp_path, prometheus_binaries) -> None:
    rng = np.random.default_rng(1)
    with running_service(settings(tmp_path, evaluation=EvaluationSettings(
            current_window_seconds=3600, interval_seconds=0.5, drift_share_threshold=0.3))) as url, \
            httpx.Client(base_url=url) as c:
        feed(url, rng, shift_devices=("d2",))
        drift = c.get("/v1/models/m/drift").json()
        assert {"dataset_drift", "drift_share", "features", "outputs"} <= set(drift)
        assert {f["name"]: f["drift_detected"] for f in drift["features"]}["a"] is True
        ranked = c.get("/v1/models/m/devices").json()["devices"]
        assert ranked[0]["device"] == "d2" and ranked[0]["drifted_features"] == ["a"]
        assert all(not d["drifted_features"] for d in ranked[1:])
        hist = c.get("/v1/models/m/drift/history").json()["history"]
        assert hist and all("features" in h for h in hist)
        one = c.get("/v1/models/m/drift", params={"since": time.time() - 330}).json()
        assert one["windows"] == 3 * 2  # only windows ending in the range are merged
        c.get("/readyz").raise_for_status()
        deadline = time.monotonic() + 20  # the background evaluation (every 0.5 s) feeds the collectors
        text = ""
        while "driftline_dataset_drift_share{" not in text and time.monotonic() < deadline:
            time.sleep(0.2)
            text = c.get("/metrics").text
    assert 'driftline_feature_drift_detected{feature="a",model="m",version="v1"} 1.0' in text
    for family in ("driftline_dataset_drift_share", "driftline_observations_total", "driftline_edge_spool_pending_windows",
                   "driftline_feature_missing_ratio", "driftline_prediction_shift_score",
                   "driftline_last_window_end_timestamp_seconds", "driftline_cohort_observations_total"):
        assert f"\n{family}{{" in text, family  # a sample, not just the HELP line
    assert "device" not in [lbl for line in text.splitlines() if line.startswith("driftline_")
                            for lbl in [p.split("=")[0] for p in line[line.find("{") + 1:line.find("}")].split(",")]]
    check = subprocess.run([str(prometheus_binaries.promtool), "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0 and check.stdout.strip() == "" and check.stderr.strip() == "", check.stderr


def test_bearer_token_on_writes(tmp_path) -> None:
    rng = np.random.default_rng(2)
    with running_service(settings(tmp_path, api_token="s3cret")) as url, httpx.Client(base_url=url) as c:
        data = envelope(window(rng, "m", "v1", start=time.time() - 60))
        assert c.post("/v1/ingest", content=data).status_code == 401
        assert c.post("/v1/ingest", content=data, headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = c.post("/v1/ingest", content=data, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert c.get("/v1/models").status_code == 200  # reads stay open


def test_postgres_and_sqlite_give_the_same_answers(tmp_path, postgres_server) -> None:
    answers = []
    for url_db in (f"sqlite:///{tmp_path / 'a.sqlite'}", postgres_server.new_database("driftline_same")):
        rng = np.random.default_rng(3)
        s = settings(tmp_path, database_url=url_db)
        with running_service(s) as url, httpx.Client(base_url=url) as c:
            feed(url, rng)
            d = c.get("/v1/models/m/drift", params={"until": time.time() + 1}).json()
            models = c.get("/v1/models").json()["models"]
            answers.append((models[0]["rows"], [(f["name"], f["drift_detected"]) for f in d["features"]],
                            d["current_rows"]))
    assert answers[0] == answers[1]


def test_retention_rolls_up_with_exact_totals(tmp_path) -> None:
    from driftline.service.store import Store
    from driftline.wire import decode_envelope

    rng = np.random.default_rng(4)
    store = Store(f"sqlite:///{tmp_path / 'r.sqlite'}")
    now = 10 * 86400.0
    total = 0
    for i in range(30):
        p = window(rng, "m", "v1", start=now - 5 * 86400 + i * 600, length=600, n=100)
        total += p.rows
        store.ingest(decode_envelope(envelope(p)), "http", now=now)
    before = len(store.windows("m"))
    removed = store.roll_up(now, raw_days=2, hourly_days=30)
    after = store.windows("m")
    assert removed > 0 and len(after) == before - removed
    assert sum(w.rows for w in after) == total
    assert sum(w.profile.features["a"].count for w in after) == total


class Retrainer:
    """A stand-in retraining system that answers 500 to the first attempts and checks signatures."""

    def __init__(self, secret: str, fail_first: int) -> None:
        self.received: list[dict] = []
        self.bad_signatures = 0
        self.attempts = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ts = self.headers["X-Driftline-Timestamp"]
                want = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
                outer.attempts += 1
                if not hmac.compare_digest(want, self.headers["X-Driftline-Signature"]):
                    outer.bad_signatures += 1
                    code = 401
                elif outer.attempts <= fail_first:
                    code = 500
                else:
                    outer.received.append(json.loads(body))
                    code = 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_internal_policy_retrains_once_through_failures_and_restarts(tmp_path) -> None:
    rng = np.random.default_rng(5)
    hook = Retrainer("k", fail_first=2)
    retrain = RetrainSettings(targets=[RetrainTarget(name="t", url=hook.url)], secret="k", sustained_seconds=0.5,
                              backoff_initial_seconds=0.1, backoff_max_seconds=0.3)
    s = settings(tmp_path, retrain=retrain, evaluation=EvaluationSettings(
        current_window_seconds=3600, interval_seconds=0.3, drift_share_threshold=0.3))
    try:
        with running_service(s) as url:
            feed(url, rng, model="drifting", shift_devices=("d1", "d2", "d3"))
            feed(url, rng, model="stable", shift_devices=())
            deadline = time.monotonic() + 30
            while not hook.received and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2.0)  # more evaluation passes: the cooldown must hold
            metrics = httpx.get(f"{url}/metrics").text
        assert len(hook.received) == 1 and hook.attempts == 3 and hook.bad_signatures == 0
        req = hook.received[0]
        assert req["model"] == "drifting" and req["version"] == "v1"
        assert [f["name"] for f in req["drifted_features"]] == ["a"]
        assert req["reference"]["source"] == "uploaded" and req["idempotency_key"]
        assert 'driftline_retrain_requests_total{model="drifting",result="delivered",target="t"} 1.0' in metrics
        assert 'driftline_retrain_requests_total{model="drifting",result="retried",target="t"} 2.0' in metrics
        # restart with the same store: nothing is sent again
        with running_service(settings(tmp_path, retrain=retrain, evaluation=s.evaluation)):
            time.sleep(1.5)
        assert len(hook.received) == 1
    finally:
        hook.close()


def test_alertmanager_receiver_dedups_an_alert_storm(tmp_path) -> None:
    rng = np.random.default_rng(6)
    hook = Retrainer("k", fail_first=0)
    retrain = RetrainSettings(targets=[RetrainTarget(name="t", url=hook.url)], secret="k", internal_policy=False,
                              backoff_initial_seconds=0.1)
    try:
        with running_service(settings(tmp_path, retrain=retrain)) as url, httpx.Client(base_url=url) as c:
            feed(url, rng, shift_devices=("d1", "d2", "d3"))
            alert = {"status": "firing", "labels": {"alertname": "DriftlineRetrainModel", "model": "m", "version": "v1",
                                                    "driftline_action": "retrain"},
                     "startsAt": "2026-11-24T10:00:00Z", "fingerprint": "abc"}
            other = {"status": "firing", "labels": {"alertname": "DriftlineStaleModel", "model": "m"}}
            for _ in range(5):
                r = c.post("/v1/alertmanager", json={"version": "4", "status": "firing", "alerts": [alert, other]})
                assert r.status_code == 200
            again = dict(alert, startsAt="2026-11-24T11:00:00Z", fingerprint="abc")
            assert c.post("/v1/alertmanager", json={"alerts": [again]}).json()["queued"] == 0  # cooldown
            assert c.post("/v1/alertmanager", json={"nope": 1}).status_code == 400
            deadline = time.monotonic() + 10
            while not hook.received and time.monotonic() < deadline:
                time.sleep(0.1)
        assert len(hook.received) == 1 and hook.received[0]["drifted_features"][0]["name"] == "a"
    finally:
        hook.close()


@pytest.mark.parametrize("regressed", [False, True], ids=["harmless", "regressed"])
def test_canary_from_sidecar_envelopes_metrics_and_gates_agree(tmp_path, regressed: bool) -> None:
    rng = np.random.default_rng(7)
    with running_service(settings(tmp_path)) as url, httpx.Client(base_url=url) as c:
        r = c.put("/v1/models/m/canary", json={"baseline_version": "v1", "canary_version": "v2",
                                              "min_rows": 2000, "min_duration_seconds": 240})
        assert r.status_code == 200 and r.json()["verdict"] == "continue"
        assert c.put("/v1/models/m/canary", json={"baseline_version": "v1"}).status_code == 422
        start = time.time()  # windows from the experiment's start on
        verdicts = []
        clock = [start]
        closed: list = []
        monitor = Monitor.configure(model="m", device="edge-1", window_seconds=60, lateness_seconds=0, background=False,
                                    sink=lambda prof, _reason: closed.append(prof), clock=lambda: clock[0],
                                    profile=ProfileConfig(categorical=frozenset({"label"})))
        for i in range(12):
            clock[0] = start + i * 60 + 1
            for version, variant in (("v1", "baseline"), ("v2", "canary")):
                bad = regressed and version == "v2"
                score = np.clip(rng.beta(5, 2, 400) + (-0.15 if bad else 0.0), 0, 1)
                monitor.observe({"a": rng.normal(0, 1, 400), "b": rng.exponential(1, 400)},
                                {"score": score, "label": (score > 0.5).astype(int)},
                                model_version=version, variant=variant,
                                latency_ms=rng.gamma(4, (6.0 if bad else 3.0) / 4, 400))
            clock[0] = start + (i + 1) * 60 + 0.5
            monitor.tick()  # the sidecar closes the due windows on time
            for prof in closed:
                assert c.post("/v1/ingest", content=envelope(prof)).status_code == 200
            closed.clear()
            res = c.get("/v1/models/m/canary").json()
            metrics = c.get("/metrics").text
            state = {v: f'driftline_canary_verdict{{baseline_version="v1",canary_version="v2",driftline_canary_verdict="{v}",model="m"}} 1.0' in metrics
                     for v in ("continue", "promote", "rollback")}
            assert state[res["verdict"]] and sum(state.values()) == 1
            check = c.post("/v1/models/m/canary/gate/check").status_code
            promote = c.post("/v1/models/m/canary/gate/promote").status_code
            rollback = c.post("/v1/models/m/canary/gate/rollback").status_code
            argo = c.get("/v1/models/m/canary/argo").json()
            assert (check == 412) == (res["verdict"] == "rollback") == (rollback == 200) == argo["rollback"]
            assert (promote == 200) == (res["verdict"] == "promote") == argo["promote"]
            verdicts.append(res["verdict"])
        assert verdicts[-1] == ("rollback" if regressed else "promote")
        if not regressed:
            assert "rollback" not in verdicts
        comps = {x["metric"]: x for x in res["comparisons"]}
        assert {"score_ks", "score_auc", "score_mean", "positive_rate", "label_mix_tvd", "error_rate",
                "latency_p50", "latency_p99", "missing_rate"} <= set(comps)
        assert all(len(x["ci"]) == 2 for x in comps.values())


def test_example_config_is_valid_and_environment_wins(tmp_path, monkeypatch) -> None:
    from driftline.service.settings import load_settings

    example = Path(__file__).resolve().parent.parent / "service" / "config.example.yaml"
    s = load_settings(example)
    assert s.port == 8000 and s.database_url.startswith("sqlite") and not s.kafka.enabled
    monkeypatch.setenv("DRIFTLINE_PORT", "9123")
    monkeypatch.setenv("DRIFTLINE_KAFKA__ENABLED", "true")
    s = load_settings(example)
    assert s.port == 9123 and s.kafka.enabled
    from driftline.errors import ConfigError

    (tmp_path / "bad.yaml").write_text("nonsense_key: 1\n")
    with pytest.raises(ConfigError, match="nonsense_key"):
        load_settings(tmp_path / "bad.yaml")
    monkeypatch.setenv("DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS", "[not json")
    with pytest.raises(ConfigError, match="DRIFTLINE_"):  # a bad variable is one line, not a traceback
        load_settings(example)


def test_evidently_report_from_reservoirs(tmp_path) -> None:
    from driftline.profile import ProfileConfig, StreamKey, WindowProfile
    from driftline.wire import Envelope, encode_envelope

    rng = np.random.default_rng(9)
    cfg = ProfileConfig(reservoir_size=300)

    def prof(shift: float, start: float, variant: str) -> bytes:
        p = WindowProfile(StreamKey.of("r", "v1", variant, "d1"), start, start + 60, cfg)
        p.update({"a": rng.normal(shift, 1, 1000), "b": rng.exponential(1, 1000)})
        return encode_envelope(Envelope([p]))

    with running_service(settings(tmp_path, read_token="r", report_rate_per_minute=600)) as url, \
            httpx.Client(base_url=url, timeout=120, headers={"Authorization": "Bearer r"}) as c:
        c.put("/v1/models/r/versions/v1/reference", content=prof(0.0, 0.0, "reference")).raise_for_status()
        no_sample = c.get("/v1/models/r/report.html")
        assert no_sample.status_code == 404  # no data yet
        c.post("/v1/ingest", content=prof(1.0, time.time() - 120, "baseline")).raise_for_status()
        r = c.get("/v1/models/r/report.html")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "<html" in r.text.lower() and len(r.text) > 10_000
        feed(url, rng, model="m")  # profiles without reservoirs
        plain = c.get("/v1/models/m/report.html")
        assert plain.status_code == 400 and "raw-row sample" in plain.json()["error"]
