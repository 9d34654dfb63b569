"""The local observe API and the HTTP transport, over real loopback sockets, end to end into a receiver."""

from __future__ import annotations

import http.client
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from driftline.edge_sidecar.errors import DeliveryRejected, TransportError
from driftline.edge_sidecar.monitor import Monitor
from driftline.edge_sidecar.runner import Sidecar
from driftline.edge_sidecar.settings import load_settings
from driftline.edge_sidecar.shipper import Shipper, backoff_delay
from driftline.edge_sidecar.spool import Spool
from driftline.edge_sidecar.transport import Outgoing, transport_from_url
from driftline.edge_sidecar.transport.http import HttpTransport
from driftline.profile import StreamKey, WindowProfile
from driftline.wire import Envelope, encode_envelope
from tests.harness.ports import free_port
from tests.sidecar_support import EnvelopeReceiver, wait_until


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    ctype = resp.getheader("Content-Type") or ""
    return resp.status, json.loads(data) if ctype.startswith("application/json") else data.decode()


@pytest.fixture
def receiver() -> Iterator[EnvelopeReceiver]:
    with EnvelopeReceiver() as rx:
        yield rx


def sidecar_settings(tmp_path: Path, url: str, **extra: Any) -> Any:
    base: dict[str, Any] = {
        "device": "dev-7", "cohort": {"site": "oslo"}, "model_version": "1",
        "window": {"seconds": 1, "lateness_seconds": 0, "tick_seconds": 0.05},
        "spool": {"path": str(tmp_path / "spool"), "fsync": False},
        "transport": {"http": {"url": url, "timeout_seconds": 5}},
        "shipper": {"backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2, "shutdown_grace_seconds": 10},
        "api": {"port": 0, "max_body_bytes": 20_000},
    }
    base.update(extra)
    return load_settings(None, **base)


@pytest.fixture
def sidecar(tmp_path: Path, receiver: EnvelopeReceiver) -> Iterator[Sidecar]:
    sc = Sidecar(sidecar_settings(tmp_path, receiver.url)).start()
    try:
        yield sc
    finally:
        sc.stop(grace=0)


def test_observe_api_accepts_json_and_ndjson_and_everything_reaches_the_receiver(
        sidecar: Sidecar, receiver: EnvelopeReceiver) -> None:
    port = sidecar.api.port
    one = {"model": "fraud", "features": {"amount": 12.5, "country": "NO"}, "outputs": {"score": 0.1},
           "request_id": "r1", "latency_ms": 3.5, "cohort": {"hw": "orin"}}
    assert request(port, "POST", "/v1/observe", json.dumps(one).encode(),
                   {"Content-Type": "application/json"}) == (200, {"accepted": 1})
    rows = [{"model": "fraud", "features": {"amount": float(i), "country": "SE"}, "variant": "canary"}
            for i in range(50)]
    assert request(port, "POST", "/v1/observe", json.dumps({"rows": rows}).encode(),
                   {"Content-Type": "application/json; charset=utf-8"}) == (200, {"accepted": 50})
    assert request(port, "POST", "/v1/observe", json.dumps(rows[:7]).encode()) == (200, {"accepted": 7})
    ndjson = "\n".join(json.dumps(r) for r in rows[:20]).encode() + b"\n\n"
    assert request(port, "POST", "/v1/observe", ndjson,
                   {"Content-Type": "application/x-ndjson"}) == (200, {"accepted": 20})
    assert wait_until(lambda: receiver.rows() == 78)
    by_stream: dict[tuple[str, str, tuple[tuple[str, str], ...]], int] = {}
    for p in receiver.profiles():
        k = (p.key.model, p.key.variant, p.key.cohort)
        by_stream[k] = by_stream.get(k, 0) + p.rows
        assert p.key.source == "dev-7" and p.key.model_version == "1"
    assert by_stream == {("fraud", "default", (("hw", "orin"), ("site", "oslo"))): 1,
                         ("fraud", "canary", (("site", "oslo"),)): 77}
    env = next(iter(receiver.envelopes.values()))
    assert {"name", "version", "device", "spool_pending", "spool_oldest_age_s", "rss_bytes",
            "cpu_seconds", "started_at"} <= set(env.producer)
    assert env.producer["name"] == "driftline-sidecar" and env.producer["device"] == "dev-7"
    assert int(env.producer["rss_bytes"]) > 0


@pytest.mark.parametrize("body, ctype, reason", [
    (b"{not json", "application/json", "malformed"),
    (b"\xff\xfe", "application/json", "malformed"),
    (b'{"features": {"a": 1}}', "application/json", "malformed"),  # no model and no default
    (b'{"model": "m", "features": [1, 2]}', "application/json", "wrong_type"),
    (b'{"model": "m", "features": {"a": 1}, "latency_ms": "fast"}', "application/json", "wrong_type"),
    (b'{"model": "m", "features": {"a": 1}, "featurs": {}}', "application/json", "malformed"),
    (b'{"model": 7, "features": {"a": 1}}', "application/json", "wrong_type"),
    (b'{"model": "m", "features": {"a": 1}, "cohort": {"k": [1]}}', "application/json", "wrong_type"),
    (b'{"rows": {"model": "m"}}', "application/json", "malformed"),
    (b'{"model": "m", "features": {}}\n[1, 2]\n', "application/x-ndjson", "wrong_type"),
    (b'{"model": "m", "features": {}}', "text/csv", "malformed"),
    (b'{"model": "' + b"m" * 300 + b'", "features": {}}', "application/json", "oversized"),
])
def test_bad_input_answers_400_with_a_reason_and_is_counted(sidecar: Sidecar, body: bytes, ctype: str,
                                                            reason: str) -> None:
    status, payload = request(sidecar.api.port, "POST", "/v1/observe", body, {"Content-Type": ctype})
    assert status == 400
    assert payload["error"] == reason and payload["detail"]
    sidecar.monitor.flush()
    snap = sidecar.monitor.snapshot()
    assert snap["rejected"] == {reason: 1}
    assert sum(snap["observed"].values()) == 0


def test_a_request_with_one_bad_row_observes_nothing(sidecar: Sidecar) -> None:
    rows = [{"model": "m", "features": {"a": 1}}] * 5 + [{"model": "m", "features": "oops"}]
    status, payload = request(sidecar.api.port, "POST", "/v1/observe", json.dumps({"rows": rows}).encode())
    assert status == 400 and payload["detail"].startswith("row 5")
    sidecar.monitor.flush()
    assert sum(sidecar.monitor.snapshot()["observed"].values()) == 0


def test_oversized_chunked_and_unknown_requests(sidecar: Sidecar) -> None:
    port = sidecar.api.port
    big = json.dumps({"model": "m", "features": {"a": "x" * 30_000}}).encode()
    status, payload = request(port, "POST", "/v1/observe", big)
    assert status == 413 and payload["error"] == "oversized"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/observe", body=iter([b'{"model": "m", ', b'"features": {}}']),
                 headers={"Transfer-Encoding": "chunked"}, encode_chunked=True)
    assert conn.getresponse().status == 411
    conn.close()
    assert request(port, "POST", "/v2/other", b"{}")[0] == 404
    assert request(port, "GET", "/nope")[0] == 404
    sidecar.monitor.flush()
    assert sidecar.monitor.snapshot()["rejected"] == {"oversized": 1}


def test_health_and_metrics_read_live_state(sidecar: Sidecar, receiver: EnvelopeReceiver) -> None:
    port = sidecar.api.port
    rows = [{"model": "m", "features": {"a": float(i)}} for i in range(30)]
    request(port, "POST", "/v1/observe", json.dumps(rows).encode())
    request(port, "POST", "/v1/observe", b"garbage")
    assert wait_until(lambda: receiver.rows() == 30)
    # the receiver counts the rows before its answer reaches the shipper, which then frees the window
    assert wait_until(lambda: request(port, "GET", "/healthz")[1]["spool"]["pending"] == 0)
    status, health = request(port, "GET", "/healthz")
    assert status == 200 and health["status"] == "ok" and health["device"] == "dev-7"
    assert health["observed_rows"] == 30 and health["spool"]["pending"] == 0
    status, text = request(port, "GET", "/metrics")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples[("driftline_sidecar_observations_total",
                    (("model", "m"), ("variant", "default"), ("version", "1")))] == 30
    assert samples[("driftline_sidecar_rejected_total", (("reason", "malformed"),))] == 1
    assert samples[("driftline_sidecar_deliveries_total", (("result", "ok"), ("transport", "http")))] >= 1
    assert samples[("driftline_sidecar_windows_closed_total", (("reason", "time"),))] >= 1
    assert samples[("driftline_sidecar_spool_pending_windows", ())] == 0
    assert samples[("driftline_sidecar_spool_limit_bytes", ())] == 64 * 1024 * 1024
    # client_python's process, platform and GC collectors replace the sidecar's own footprint series
    assert samples[("process_resident_memory_bytes", ())] > 10_000_000
    assert samples[("process_cpu_seconds_total", ())] > 0
    assert samples[("process_start_time_seconds", ())] > 1e9
    assert any(name == "python_info" for name, _ in samples)
    assert any(name == "python_gc_collections_total" for name, _ in samples)
    for name, _ in samples:
        assert name.startswith(("driftline_sidecar_", "process_", "python_"))
        assert "dev-7" not in name


# ---- the HTTP transport and the shipper ---------------------------------------------------------------
def window(i: int, model: str = "m") -> WindowProfile:
    p = WindowProfile(StreamKey.of(model, "1"), 60.0 * i, 60.0 * i + 60)
    p.update({"x": [float(i)] * (10 + i)})
    return p


def outgoing(p: WindowProfile) -> Outgoing:
    env = Envelope([p])
    return Outgoing(p.key.model.encode(), encode_envelope(env), env.envelope_id)


def test_http_transport_follows_the_service_contract(receiver: EnvelopeReceiver) -> None:
    t = transport_from_url(receiver.url + "/", token="s3cret")
    assert isinstance(t, HttpTransport) and t.path == "/v1/ingest"
    item = outgoing(window(1))
    assert t.send([item, item]) == [None, None]  # accepted, then duplicate: both confirmed
    assert receiver.duplicates == 1
    receiver.fail_with = (503, 1)
    (err,) = t.send([outgoing(window(2))])
    assert isinstance(err, TransportError) and err.retriable and not err.maybe_delivered
    receiver.fail_with = (429, 1)
    assert t.send([outgoing(window(2))])[0].retriable  # type: ignore[union-attr]
    receiver.token = "other"
    (rej,) = t.send([outgoing(window(3))])
    assert isinstance(rej, DeliveryRejected) and rej.status == 401 and not rej.retriable
    t.close()
    dead = HttpTransport(f"http://127.0.0.1:{free_port()}", timeout=2)
    errs = dead.send([outgoing(window(4)), outgoing(window(5))])
    assert all(isinstance(e, TransportError) and e.retriable and not e.maybe_delivered for e in errs)
    assert errs[1].attempted is False  # type: ignore[union-attr]


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    for failures in range(1, 12):
        base = min(30.0, 0.5 * 2 ** (failures - 1))
        for _ in range(20):
            assert base / 2 <= backoff_delay(failures, 0.5, 30.0, rng) <= base
    assert len({backoff_delay(3, 0.5, 30.0, rng) for _ in range(20)}) > 10


def test_shipper_delivers_everything_through_outages_and_moves_rejections_aside(tmp_path: Path) -> None:
    port = free_port()
    spool = Spool(tmp_path, 10_000_000, fsync=False)
    sent = [window(i, model=f"m{i % 2}") for i in range(40)]
    for p in sent[:20]:
        spool.put(p)
    shipper = Shipper(spool, HttpTransport(f"http://127.0.0.1:{port}", timeout=2), batch_windows=7,
                      backoff_initial=0.05, backoff_max=0.2, seed=1).start()
    try:
        time.sleep(0.5)  # nobody listens yet: rounds fail, nothing is lost
        assert spool.stats().pending == 20 and shipper.failures > 0
        with EnvelopeReceiver(port=port) as rx:
            rx.fail_with = (500, 3)
            for p in sent[20:]:
                spool.put(p)
                shipper.wake()
            assert shipper.drain(30)
            assert rx.rows() == sum(p.rows for p in sent)
            assert len(rx.envelopes) == 40
            rx.token = "required"
            spool.put(window(99))
            shipper.wake()
            assert wait_until(lambda: spool.stats().rejected == 1)
    finally:
        shipper.stop()
    assert spool.stats().pending == 0
    assert [p.name for p in (tmp_path / "rejected").glob("*.dle")]
    assert shipper.deliveries["ok"] == 40 and shipper.rejected == 1


def test_monitor_only_api_without_a_sidecar(tmp_path: Path) -> None:
    from driftline.edge_sidecar.ingest_http import LocalApi

    m = Monitor.configure(model="m", model_version="1", background=False)
    api = LocalApi(m, observe=False).start()
    try:
        assert request(api.port, "POST", "/v1/observe", b'{"features": {}}')[0] == 404
    finally:
        api.stop()


def test_monitor_with_a_service_url_ships_from_the_application_process(tmp_path: Path,
                                                                       receiver: EnvelopeReceiver) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    offline = Monitor.configure(model="app", model_version="3", device="pod-1", service_url=dead,
                                spool_dir=str(tmp_path), shutdown_grace_seconds=0.2).start()
    other = Monitor.configure(model="app", model_version="3", service_url=dead, spool_dir=str(tmp_path),
                              shutdown_grace_seconds=0).start()
    assert offline._delivery.spool.root.name == "0" and other._delivery.spool.root.name == "1"
    for i in range(40):
        offline.observe({"x": float(i)}, 0.5)
    offline.close()  # the service is unreachable: the window waits on disk
    other.close()
    left = Spool(tmp_path / "0", 10**9)
    assert left.stats().pending_rows == 40
    left.close()
    online = Monitor.configure(model="app", model_version="3", device="pod-2", service_url=receiver.url,
                               spool_dir=str(tmp_path), shutdown_grace_seconds=10).start()
    online.observe(np.ones((10, 2)))
    online.close()
    assert receiver.rows() == 50
    producers = {env.producer["name"] for env in receiver.envelopes.values()}
    assert producers == {"driftline-sdk"}


def test_exposed_metric_families_are_exactly_the_catalogued_ones(tmp_path: Path) -> None:
    import re

    from prometheus_client import generate_latest

    from driftline.edge_sidecar.judge import ActionRunner, Judge, JudgeCollector, ReferenceSource
    from driftline.edge_sidecar.metrics import SidecarCollector, sidecar_registry
    from driftline.edge_sidecar.proxy import InferenceProxy
    from driftline.edge_sidecar.settings import JudgeSettings

    catalogue = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"`(driftline_sidecar_[a-z_]+)`", catalogue))
    runtime = set(re.findall(r"`((?:process|python)_[a-z_]+)`", catalogue))
    m = Monitor.configure(model="m", model_version="1", background=False,
                          labels=True)  # the delayed-label families (labels.enabled) are catalogued too
    spool = Spool(tmp_path, 1_000_000, fsync=False)
    shipper = Shipper(spool, HttpTransport("http://127.0.0.1:9"))
    proxy = InferenceProxy(m, "http://127.0.0.1:9")  # not started: its counters are enough
    from driftline.edge_sidecar.shadow import ShadowMirror

    proxy.shadow = ShadowMirror(m, "http://127.0.0.1:9")  # proxy.shadow's families are catalogued too (not started)
    registry = sidecar_registry(SidecarCollector(m, spool, shipper, proxy))
    js = JudgeSettings(enabled=True)
    judge = Judge(js, ReferenceSource(js, None), ActionRunner(js))
    registry.register(JudgeCollector(judge))  # the judge's families (judge.enabled) are catalogued too
    from driftline.edge_sidecar.hostwatch import HostWatch
    from driftline.edge_sidecar.metrics import HostWatchCollector

    registry.register(HostWatchCollector(HostWatch(os.getpid())))  # and the host's (watch_pid)
    from driftline.edge_sidecar.golden import GoldenCollector, GoldenRunner

    registry.register(GoldenCollector(GoldenRunner([], lambda golden, inputs: {})))  # and golden.enabled's
    text = generate_latest(registry).decode()
    exposed = {fam.name + ("_total" if fam.type == "counter" else "")
               for fam in text_string_to_metric_families(text)}
    assert {n for n in exposed if n.startswith("driftline_")} == documented
    assert {n for n in exposed if not n.startswith("driftline_")} <= runtime
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"} <= exposed
    spool.close()
