"""The sidecar against a real Kafka broker: outages and a SIGKILLed sidecar lose no row.

Delivery is at least once; envelope ids make it exactly once in effect, so the checks de-duplicate
by id (as the service does) and then require the row totals to match what was observed, exactly.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from driftline.edge_sidecar.runner import Sidecar
from driftline.edge_sidecar.settings import load_settings
from driftline.edge_sidecar.transport import record_key
from driftline.wire import Envelope, decode_envelope
from tests.harness.kafka import KafkaBroker
from tests.harness.ports import free_port, wait_for_port

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[1]


def kafka_section(broker: KafkaBroker, topic: str) -> dict[str, Any]:
    return {"kind": "kafka", "kafka": {
        "bootstrap_servers": [broker.bootstrap], "topic": topic, "request_timeout_ms": 4000,
        "max_block_ms": 2000, "retry_backoff_ms": 100, "extra": {"delivery_timeout_ms": 8000}}}


def consume(broker: KafkaBroker, topic: str, rows: int, timeout: float = 90.0) -> tuple[dict[str, Envelope], int]:
    """Envelopes by id (duplicates dropped) until they hold ``rows`` rows; also the raw record count."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=f"t-{uuid.uuid4().hex[:8]}",
                             auto_offset_reset="earliest", enable_auto_commit=False)
    envelopes: dict[str, Envelope] = {}
    records = 0
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for rec in batch:
                    records += 1
                    env = decode_envelope(rec.value)
                    assert rec.key == record_key(env.profiles[0].key.model, env.profiles[0].key.source)
                    envelopes.setdefault(env.envelope_id, env)
            if sum(e.rows for e in envelopes.values()) >= rows:
                # one more poll: anything beyond the expected total would be double counting
                for batch in consumer.poll(timeout_ms=1000).values():
                    for rec in batch:
                        records += 1
                        env = decode_envelope(rec.value)
                        envelopes.setdefault(env.envelope_id, env)
                break
    finally:
        consumer.close()
    return envelopes, records


def per_model(envelopes: dict[str, Envelope]) -> dict[str, int]:
    out: dict[str, int] = {}
    for env in envelopes.values():
        for p in env.profiles:
            out[p.key.model] = out.get(p.key.model, 0) + p.rows
    return out


def test_broker_outage_while_shipping_loses_no_row(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    topic = f"driftline.envelopes.outage-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=2)
    settings = load_settings(None, device="dev-k", model_version="1",
                             window={"seconds": 0.5, "lateness_seconds": 0, "tick_seconds": 0.05},
                             spool={"path": str(tmp_path / "spool"), "max_bytes": "4MiB"},
                             transport=kafka_section(kafka_broker, topic),
                             shipper={"backoff_initial_seconds": 0.2, "backoff_max_seconds": 2},
                             api={"port": 0})
    sc = Sidecar(settings).start()
    rng = np.random.default_rng(0)
    observed: dict[str, int] = {"fraud": 0, "churn": 0}

    def traffic(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            n = int(rng.integers(1, 200))
            sc.monitor.observe({"amount": rng.lognormal(3, 1, n), "country": rng.choice(["no", "se"], n)},
                               rng.random(n), model="fraud")
            sc.monitor.observe({"tenure": float(rng.integers(0, 60)), "plan": "gold"}, 0.3, model="churn")
            observed["fraud"] += n
            observed["churn"] += 1
            time.sleep(0.01)

    try:
        traffic(2.0)
        assert kafka_broker.stop()
        traffic(3.0)  # windows close and pile up in the spool while the broker is away
        assert sc.spool.stats().pending > 0
        kafka_broker.start()
        traffic(1.0)
        assert sc.stop(grace=90), f"spool not drained: {sc.spool.stats()} last error {sc.shipper.last_error}"
    finally:
        sc.stop(grace=0)
        if not kafka_broker.running:
            kafka_broker.start()
    envelopes, records = consume(kafka_broker, topic, sum(observed.values()))
    assert per_model(envelopes) == observed
    assert sc.spool.stats().dropped == 0 and sc.monitor.snapshot()["rejected"] == {}
    assert records >= len(envelopes)


def post_rows(port: int, rows: list[dict[str, Any]]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/observe", body="\n".join(json.dumps(r) for r in rows).encode(),
                     headers={"Content-Type": "application/x-ndjson"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200, body
    return int(body["accepted"])


def health(port: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def wait_health(port: int, cond: Any, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    h: dict[str, Any] = {}
    while time.monotonic() < deadline:
        h = health(port)
        if cond(h):
            return h
        time.sleep(0.1)
    raise AssertionError(f"condition not met in {timeout}s; last health {h}")


def start_sidecar(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    return subprocess.Popen([sys.executable, "-m", "driftline.apps.cli.main", "sidecar", "--config", str(config)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def test_sigkill_with_a_full_spool_then_restart_delivers_everything(kafka_broker: KafkaBroker,
                                                                    tmp_path: Path) -> None:
    topic = f"driftline.envelopes.kill-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=3)
    port = free_port()
    config = tmp_path / "sidecar.yaml"
    config.write_text(yaml.safe_dump({
        "device": "dev-kill", "model_version": "2",
        "window": {"seconds": 0.5, "lateness_seconds": 0, "tick_seconds": 0.05},
        # room for the 8 streams' merged windows (float64 sketches), far less than the rows sent
        "spool": {"path": str(tmp_path / "spool"), "max_bytes": 80_000},
        "transport": kafka_section(kafka_broker, topic),
        "shipper": {"backoff_initial_seconds": 0.2, "backoff_max_seconds": 1, "shutdown_grace_seconds": 30},
        "api": {"port": port},
    }))
    log = tmp_path / "sidecar.log"
    rng = np.random.default_rng(1)
    accepted: dict[str, int] = {}
    assert kafka_broker.stop()  # nothing can leave: the spool fills up and has to merge
    proc = start_sidecar(config, log)
    try:
        assert wait_for_port(port, 30), log.read_text()
        for i in range(40):
            model = f"model-{i % 4}"
            n = int(rng.integers(50, 300))
            rows = [{"model": model, "variant": "canary" if j % 5 == 0 else "baseline",
                     "features": {"x": float(v), "k": str(int(v * 10) % 7)}, "outputs": {"p": float(v) / 3}}
                    for j, v in enumerate(rng.normal(size=n))]
            accepted[model] = accepted.get(model, 0) + post_rows(port, rows)
            time.sleep(0.1)
        h = wait_health(port, lambda h: h["open_windows"] == 0 and h["buffered_rows"] == 0
                        and h["spool"]["pending_rows"] == sum(accepted.values()))
        assert h["spool"]["merged"] > 0, h  # the bound was hit ...
        assert h["spool"]["dropped"] == 0, h  # ... and merging made room every time
        assert h["spool"]["bytes"] <= 80_000
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kafka_broker.start()  # also when the test fails: the session's other tests share the broker
    proc = start_sidecar(config, log)
    try:
        assert wait_for_port(port, 30), log.read_text()
        wait_health(port, lambda h: h["spool"]["pending"] == 0, timeout=90)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    envelopes, _ = consume(kafka_broker, topic, sum(accepted.values()))
    assert per_model(envelopes) == accepted
    variants = {p.key.variant for env in envelopes.values() for p in env.profiles}
    assert variants == {"canary", "baseline"}
    assert all(env.producer["device"] == "dev-kill" for env in envelopes.values())
