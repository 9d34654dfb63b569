"""Retraining dispatcher: the policy, payload templates, the outbox on SQLite and PostgreSQL, delivery.

Real parts throughout: the store on a SQLite file and on a real PostgreSQL server, a loopback HTTP
server standing in for the retraining system (it checks every signature itself), the service under
uvicorn for the webhook receiver. Clocks are injected where the test is about time (backoff,
deadline, cooldown, sustained drift), so nothing waits for real minutes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from prometheus_client import generate_latest

from driftline.apps.demo.receiver import RetrainReceiver
from driftline.service.app import Background, open_parts
from driftline.service.retrain import Dispatcher, RetrainPolicy, build_request, render_payload
from driftline.service.retrain.outbox import Outbox, PendingRequest
from driftline.service.retrain.policy import format_duration
from driftline.service.retrain.templates import headers
from driftline.service.settings import EvaluationSettings, RetrainSettings, RetrainTarget, ServiceSettings
from driftline.service.store import Store
from driftline.wire import decode_envelope
from tests.retrain_support import RetrainSink
from tests.service_support import envelope, reference_bytes, running_service, window


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'retrain.sqlite'}"
    return request.getfixturevalue("postgres_server").new_database(f"retrain_{uuid.uuid4().hex[:10]}")


class Clock:
    """A settable clock for the dispatcher."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def episode(i: int, model: str = "m") -> str:
    return RetrainPolicy.alert_episode(f"fp{i}", "2026-11-24T10:00:00Z", model, "v1")


# ---- the policy and the wire format (pure) ----------------------------------------------------------

def test_policy_condition_cooldown_and_episode_keys() -> None:
    p = RetrainPolicy(sustained_seconds=900, cooldown_seconds=3600)
    assert p.rule_for() == "15m" and format_duration(5400) == "1h30m" and format_duration(90) == "1m30s"
    assert format_duration(0) == "0s"
    assert not p.should_retrain(None, 10_000)
    assert not p.should_retrain(1000, 1899) and p.should_retrain(1000, 1900)
    assert p.wants_alert("firing", {"driftline_action": "retrain", "model": "m"})
    assert not p.wants_alert("resolved", {"driftline_action": "retrain", "model": "m"})
    assert not p.wants_alert("firing", {"driftline_action": "retrain"})
    assert not p.wants_alert("firing", {"model": "m", "severity": "critical"})
    e1, e2 = p.alert_episode("fp", "t0", "m", "v1"), p.alert_episode("fp", "t1", "m", "v1")
    assert p.idempotency_key(e1, "a") == p.idempotency_key(e1, "a") != p.idempotency_key(e1, "b")
    assert p.idempotency_key(e1, "a") != p.idempotency_key(e2, "a")


def test_outbox_cooldown_ends_exactly_after_cooldown_seconds() -> None:
    """The cooldown is the outbox's one conditional upsert: a new episode 1 s early is refused, on time queued."""
    store = Store("sqlite://")
    try:
        box = Outbox(store)
        first = box.enqueue("m", [PendingRequest("e1", "a", "https://x", "{}")], 1000.0, 3600.0)
        early = box.enqueue("m", [PendingRequest("e2", "a", "https://x", "{}")], 4599.0, 3600.0)
        other = box.enqueue("n", [PendingRequest("e3", "a", "https://x", "{}")], 4599.0, 3600.0)
        on_time = box.enqueue("m", [PendingRequest("e4", "a", "https://x", "{}")], 4600.0, 3600.0)
        assert first.queued == ["a"] and early.cooldown == ["a"] and not early.queued
        assert other.queued == ["a"] and on_time.queued == ["a"]
    finally:
        store.close()


def test_templates_carry_the_request_and_the_signature_verifies() -> None:
    details = {"drift": {"drift_share": 0.6}, "drifted_features": [{"name": "amount", "scores": {"psi": 0.8}}],
               "reference": {"source": "uploaded"}}
    req = build_request("k" * 32, "fraud", "v3", "DriftlineRetrainModel", {"source": "alertmanager"}, 1.7e9, details)
    gh = render_payload(RetrainTarget(name="gh", url="https://x", kind="github_dispatch"), req)
    assert gh == {"event_type": "driftline-retrain", "client_payload": req}
    assert len(gh["client_payload"]) <= 10  # GitHub's limit on client_payload's top-level keys
    wf = render_payload(RetrainTarget(name="a", url="https://x", kind="argo_workflows", workflow_template="rt"), req)
    assert wf["resourceKind"] == "WorkflowTemplate" and wf["resourceName"] == "rt"
    params = dict(p.split("=", 1) for p in wf["submitOptions"]["parameters"])
    assert params["model"] == "fraud" and params["version"] == "v3" and json.loads(params["request"]) == req
    ev = render_payload(RetrainTarget(name="e", url="https://x", kind="argo_events"), req)
    assert ev["data"] == req and ev["id"] == req["idempotency_key"]
    assert render_payload(RetrainTarget(name="w", url="https://x"), req) == req

    target = RetrainTarget(name="gh", url="https://x", kind="github_dispatch", token="tok")
    body = json.dumps(gh).encode()
    h = headers(target, body, "s3cret", "1700000000", "k" * 32)
    assert h["Authorization"] == "Bearer tok" and h["Accept"] == "application/vnd.github+json"
    assert h["Idempotency-Key"] == "k" * 32 and h["X-Driftline-Timestamp"] == "1700000000"
    # the demo's receiver verifies with its own code: the right secret and body pass, nothing else
    verify = RetrainReceiver.verify
    assert verify(SimpleNamespace(secret=b"s3cret"), body, h)
    assert not verify(SimpleNamespace(secret=b"other"), body, h)
    assert not verify(SimpleNamespace(secret=b"s3cret"), body + b" ", h)
    assert not verify(SimpleNamespace(secret=b"s3cret"), body, {**h, "X-Driftline-Timestamp": "1700000001"})


# ---- the outbox ---------------------------------------------------------------------------------------

def test_alert_storm_starts_one_retraining_per_episode(store_url: str) -> None:
    store = Store(store_url)
    clock = Clock()
    d = Dispatcher(store, RetrainSettings(targets=[RetrainTarget(name="a", url="http://127.0.0.1:9/a"),
                                                   RetrainTarget(name="b", url="http://127.0.0.1:9/b", models=["x"])],
                                          cooldown_seconds=3600, secret="k"), clock=clock)
    try:
        queued = [d.request("m", "v1", "DriftlineRetrainModel", episode(i), {}) for i in range(20)]
        assert queued == [1] + [0] * 19  # target b only serves model x
        assert d.request("m", "v1", "DriftlineRetrainModel", episode(0), {}) == 0
        assert d.results[("m", "a", "cooldown")] == 19 and d.results[("m", "a", "deduplicated")] == 1
        assert d.results[("m", "a", "given_up")] == 0 and ("m", "b", "cooldown") not in d.results
        assert d.request("x", "v1", "DriftlineRetrainModel", episode(0, "x"), {}) == 2  # cooldown is per model
        clock.t += 3600
        assert d.request("m", "v1", "DriftlineRetrainModel", episode(0), {}) == 0  # an old episode stays done
        assert d.request("m", "v1", "DriftlineRetrainModel", episode(99), {}) == 1  # a new one, after the cooldown
        assert d.outbox_stats() == (4, 3600.0)
        # two senders that read the same due row: the compare-and-set lets only the first take it
        (oid, due), *rest = store.query("SELECT id, next_attempt_at FROM outbox ORDER BY id")
        assert d.outbox.lease(oid, due, clock.t + 40) and not d.outbox.lease(oid, due, clock.t + 40)
        claimed = []
        while (row := d.outbox.claim_one(clock.t, 40)) is not None:
            claimed.append(row.id)
        assert claimed == [i for i, _ in rest]
        assert d.outbox.claim_one(clock.t, 40) is None  # leased rows are not due
    finally:
        store.close()


@pytest.mark.postgres
def test_two_replicas_racing_on_postgresql_queue_and_send_once(postgres_server) -> None:
    url = postgres_server.new_database(f"retrain_{uuid.uuid4().hex[:10]}")
    sink = RetrainSink("k")
    settings = RetrainSettings(targets=[RetrainTarget(name="t", url=sink.url)], secret="k")
    stores = [Store(url), Store(url)]
    replicas = [Dispatcher(s, settings) for s in stores]
    try:
        gate = threading.Barrier(2)
        counts: list[int] = []

        def storm(d: Dispatcher, offset: int) -> None:
            gate.wait()
            counts.extend(d.request("m", "v1", "r", episode(offset + i), {}) for i in range(15))

        threads = [threading.Thread(target=storm, args=(d, 100 * n)) for n, d in enumerate(replicas)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sum(counts) == 1
        # both senders pass over the outbox at once: the lease lets one of them post
        gate = threading.Barrier(2)
        sent: list[int] = []

        def send(d: Dispatcher) -> None:
            gate.wait()
            sent.append(d.deliver_due())

        threads = [threading.Thread(target=send, args=(d,)) for d in replicas]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(sent) == [0, 1] and len(sink.attempts) == 1 and sink.bad_signatures == 0
    finally:
        for s in stores:
            s.close()
        sink.close()


def test_pending_requests_survive_a_restart(store_url: str) -> None:
    sink = RetrainSink("k", fail_first=2)
    settings = RetrainSettings(targets=[RetrainTarget(name="t", url=sink.url)], secret="k",
                               backoff_initial_seconds=0.05, backoff_max_seconds=0.1)
    store = Store(store_url)
    first = Dispatcher(store, settings)
    try:
        assert first.request("m", "v1", "r", episode(1), {"drifted_features": [{"name": "a"}]}) == 1
        assert first.deliver_due() == 0  # a 500: still pending when the process "dies"
        store.close()
        store = Store(store_url)
        second = Dispatcher(store, settings)
        assert second.outbox_stats()[0] == 1
        assert second.results[("m", "t", "given_up")] == 0  # counters start at zero for known pairs
        second.start()
        try:
            got = sink.wait_accepted(1, timeout=20)
            time.sleep(0.3)  # further sender passes: nothing more
        finally:
            second.stop()
        assert len(got) == 1 and len(sink.accepted) == 1 and got[0]["drifted_features"] == [{"name": "a"}]
        assert [a.status for a in sink.attempts] == [500, 500, 200] and sink.bad_signatures == 0
        assert len({a.idempotency_key for a in sink.attempts}) == 1  # every attempt carries the same key
        assert second.outbox_stats() == (0, 0.0) and second.results[("m", "t", "delivered")] == 1
    finally:
        store.close()
        sink.close()


def test_backoff_grows_with_jitter_and_the_deadline_gives_up(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    sink = RetrainSink("k", status=302)  # a redirect is no acknowledgement
    clock = Clock()
    store = Store(f"sqlite:///{tmp_path / 'o.sqlite'}")
    d = Dispatcher(store, RetrainSettings(targets=[RetrainTarget(name="t", url=sink.url)], secret="k",
                                          backoff_initial_seconds=10, backoff_max_seconds=80, deadline_seconds=300),
                   clock=clock)
    try:
        d.request("m", "v1", "r", episode(1), {})
        created = clock.t
        delays: list[tuple[float, float]] = []
        with caplog.at_level(logging.WARNING, logger="driftline.service.retrain"):
            for _ in range(30):
                if d.deliver_due() or d.outbox_stats()[0] == 0:
                    break
                due = d.outbox.next_due()
                assert due is not None and due <= created + 300  # never scheduled past the deadline
                delays.append((due - clock.t, due))
                clock.t = due
        for (delay, due), cap in zip(delays, [10, 20, 40, 80, 80, 80, 80], strict=False):
            assert cap / 2 <= delay <= cap or (due == created + 300 and delay <= cap), (delay, cap)
        assert [x for x, _ in delays[:3]] != [10, 20, 40]  # jittered
        assert d.results[("m", "t", "given_up")] == 1 and d.results[("m", "t", "delivered")] == 0
        assert d.outbox.rows("m")[0]["status"] == "given_up"
        assert any(r.levelno == logging.ERROR and "gave up" in r.getMessage() for r in caplog.records)
        assert all(a.status == 302 for a in sink.attempts) and len(sink.attempts) == d.results[("m", "t", "retried")] + 1
    finally:
        store.close()
        sink.close()


# ---- the embedded policy and the webhook receiver ----------------------------------------------------

def _ingest_windows(parts, rng: np.random.Generator, model: str, start: float, shift: float) -> None:
    for i in range(5):
        for dev in ("d1", "d2"):
            p = window(rng, model, "v1", device=dev, start=start + i * 60, shift=shift)
            parts.store.ingest(decode_envelope(envelope(p, device=dev)), "http")


def test_embedded_policy_retrains_once_per_episode(tmp_path) -> None:
    rng = np.random.default_rng(11)
    settings = ServiceSettings(
        database_url=f"sqlite:///{tmp_path / 'e.sqlite'}",
        evaluation=EvaluationSettings(current_window_seconds=600, drift_share_threshold=0.3),
        retrain=RetrainSettings(targets=[RetrainTarget(name="t", url="http://127.0.0.1:9/none")],
                                sustained_seconds=120, cooldown_seconds=60, secret="k"))
    parts = open_parts(settings)
    bg = Background(parts)
    t0 = 2_000_000_000.0
    try:
        for model in ("drifting", "stable"):
            ref = decode_envelope(reference_bytes(rng, model, "v1")).profiles[0]
            parts.store.put_reference(model, "v1", ref, "uploaded")
        _ingest_windows(parts, rng, "drifting", t0 - 300, shift=1.5)
        _ingest_windows(parts, rng, "stable", t0 - 300, shift=0.0)
        for dt in (0, 30, 60, 90):  # drift, but not for 120 s yet
            bg.run_once(t0 + dt)
        assert parts.dispatcher.outbox.rows() == []
        for dt in (120, 150, 180):
            bg.run_once(t0 + dt)
        rows = parts.dispatcher.outbox.rows()
        assert [(r["model"], r["status"]) for r in rows] == [("drifting", "pending")]
        assert parts.dispatcher.results[("drifting", "t", "deduplicated")] == 0  # later passes are silent
        body = json.loads(parts.store.query("SELECT body FROM outbox")[0][0])
        assert body["trigger"]["source"] == "service" and body["reference"]["source"] == "uploaded"
        assert [f["name"] for f in body["drifted_features"]] == ["a"] and body["drifted_features"][0]["scores"]["ks"]
        # the drifted windows age out of the evaluation window: the episode ends; a new one starts later
        t1 = t0 + 1000
        bg.run_once(t1)
        _ingest_windows(parts, rng, "drifting", t1 - 300, shift=-1.5)
        for dt in (10, 60, 100, 140):
            bg.run_once(t1 + dt)
        assert [r["model"] for r in parts.dispatcher.outbox.rows()] == ["drifting", "drifting"]
        scrape = generate_latest(parts.registry).decode()
        assert 'driftline_retrain_outbox_depth 2.0' in scrape
        assert 'driftline_retrain_requests_total{model="drifting",result="given_up",target="t"} 0.0' in scrape
        assert 'model="stable"' not in "\n".join(x for x in scrape.splitlines() if x.startswith("driftline_retrain"))
    finally:
        parts.store.close()


def test_webhook_receiver_takes_alertmanager_payloads(tmp_path) -> None:
    rng = np.random.default_rng(12)
    sink = RetrainSink("k")
    settings = ServiceSettings(
        database_url=f"sqlite:///{tmp_path / 'w.sqlite'}", port=0, api_token="tok",
        evaluation=EvaluationSettings(interval_seconds=3600, drift_share_threshold=0.3),
        retrain=RetrainSettings(targets=[RetrainTarget(name="t", url=sink.url, kind="argo_events")], secret="k",
                                internal_policy=False, backoff_initial_seconds=0.05))
    firing = {"status": "firing", "labels": {"alertname": "DriftlineRetrainModel", "model": "m", "version": "v1",
                                             "driftline_action": "retrain", "severity": "info"},
              "annotations": {"summary": "Retrain m v1"}, "startsAt": "2026-11-24T10:00:00Z",
              "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph", "fingerprint": "f00d"}
    page = dict(firing, labels={"alertname": "DriftlineDatasetDrift", "model": "m", "severity": "warning"})
    resolved = dict(firing, status="resolved", fingerprint="beef")
    payload = {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing", "receiver": "retrain",
               "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
               "alerts": [firing, page, resolved]}
    auth = {"Authorization": "Bearer tok"}
    try:
        with running_service(settings) as url, httpx.Client(base_url=url, headers=auth) as c:
            c.put("/v1/models/m/versions/v1/reference", content=reference_bytes(rng, "m", "v1")).raise_for_status()
            now = time.time()
            for i in range(5):
                c.post("/v1/ingest", content=envelope(window(rng, "m", "v1", start=now - 300 + i * 60,
                                                             shift=1.5))).raise_for_status()
            assert httpx.post(f"{url}/v1/alertmanager", json=payload).status_code == 401
            r = c.post("/v1/alertmanager", json=payload)
            assert r.status_code == 200 and r.json() == {"received": 3, "queued": 1, "ignored": 2}
            for _ in range(3):  # Alertmanager's repeats of the same group
                assert c.post("/v1/alertmanager", json=payload).json()["queued"] == 0
            for bad in (b"not json", b'{"alerts": [{"labels": {}}]}', b'{"alerts": "x"}', b"[]"):
                r = c.post("/v1/alertmanager", content=bad, headers={"Content-Type": "application/json"})
                assert r.status_code == 400 and "Alertmanager" in r.json()["error"], bad
            got = sink.wait_accepted(1, timeout=15)
            metrics = httpx.get(f"{url}/metrics").text
        assert len(got) == 1 and sink.bad_signatures == 0
        req = got[0]["data"]
        assert req["model"] == "m" and req["version"] == "v1" and req["reason"] == "DriftlineRetrainModel"
        assert req["trigger"]["fingerprint"] == "f00d" and req["trigger"]["starts_at"] == "2026-11-24T10:00:00Z"
        assert req["drifted_features"][0]["name"] == "a" and req["drifted_features"][0]["scores"]["psi"] > 0.2
        assert req["reference"] == {"model": "m", "version": "v1", "source": "uploaded", "rows": 5000}
        assert req["drift"]["drift_share"] > 0.3 and req["drift"]["dataset_drift"] is True
        assert 'driftline_retrain_requests_total{model="m",result="deduplicated",target="t"} 3.0' in metrics
        assert 'driftline_retrain_requests_total{model="m",result="delivered",target="t"} 1.0' in metrics
    finally:
        sink.close()
