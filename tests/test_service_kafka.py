"""The service's Kafka path on a real broker: exactly-once merge, dead letters, and scale-out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer

from driftline.service.settings import EvaluationSettings, KafkaSettings, ServiceSettings
from tests.harness.ports import free_port
from tests.service_support import envelope, reference_bytes, running_service, window


def total_rows(url: str) -> int:
    try:
        return sum(m["rows"] for m in httpx.get(f"{url}/v1/models", timeout=5).json()["models"])
    except (httpx.HTTPError, ValueError):
        return -1


def wait_for(pred, timeout: float, step: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def kafka_settings(tmp_path, kafka_broker, topic: str, dlq: str) -> ServiceSettings:
    """A service on SQLite consuming ``topic`` from the test broker, dead letters to ``dlq``."""
    return ServiceSettings(database_url=f"sqlite:///{tmp_path / 'k.sqlite'}", port=0,
                           kafka=KafkaSettings(enabled=True, bootstrap_servers=[kafka_broker.bootstrap], topic=topic,
                                               dead_letter_topic=dlq, group_id=f"g-{topic}"),
                           evaluation=EvaluationSettings(interval_seconds=3600))


def read_dead_letters(kafka_broker, dlq: str) -> list:
    """Every record of the dead-letter topic, from the start."""
    consumer = KafkaConsumer(dlq, bootstrap_servers=kafka_broker.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000, group_id=None)
    try:
        return list(consumer)
    finally:
        consumer.close()


def dead_lettered(url: str, n: int) -> bool:
    """Whether the service counts ``n`` dead-lettered Kafka records (counted after the topic acknowledges)."""
    try:
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return False
    return f'driftline_ingest_envelopes_total{{result="dead_lettered",transport="kafka"}} {n:.1f}' in metrics


def test_consumer_merges_exactly_once_and_dead_letters_garbage(tmp_path, kafka_broker) -> None:
    topic, dlq = f"env-{uuid.uuid4().hex[:8]}", f"dlq-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=3)
    kafka_broker.create_topic(dlq, partitions=1)
    rng = np.random.default_rng(0)
    s = kafka_settings(tmp_path, kafka_broker, topic, dlq)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    expected = 0
    now = time.time()
    with running_service(s) as url:
        for i in range(20):
            p = window(rng, f"model-{i % 4}", "v1", device=f"d{i}", start=now - 120)
            data = envelope(p)
            expected += p.rows
            producer.send(topic, key=p.key.model.encode(), value=data)
            if i % 5 == 0:
                producer.send(topic, key=p.key.model.encode(), value=data)  # a redelivery
        for junk in (b"garbage", b"DLNE\x01\x00truncated"):
            producer.send(topic, key=b"x", value=junk)
        producer.flush()
        assert wait_for(lambda: total_rows(url) == expected, 60), (total_rows(url), expected)
        metrics = ""

        def counted() -> bool:
            nonlocal metrics
            metrics = httpx.get(f"{url}/metrics").text
            return 'driftline_ingest_envelopes_total{result="dead_lettered",transport="kafka"} 2.0' in metrics

        assert wait_for(counted, 20), metrics
        assert 'driftline_ingest_envelopes_total{result="duplicate",transport="kafka"} 4.0' in metrics
        assert 'driftline_ingest_envelopes_total{result="accepted",transport="kafka"} 20.0' in metrics
        time.sleep(1.0)
        assert total_rows(url) == expected  # nothing counted twice
    producer.close()
    dead = read_dead_letters(kafka_broker, dlq)
    assert sorted(m.value for m in dead) == sorted([b"garbage", b"DLNE\x01\x00truncated"])
    assert all(dict(m.headers).get("driftline-error") for m in dead)


def _safe_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_scale_out_two_replicas_one_killed_every_row_once(tmp_path, kafka_broker, postgres_server) -> None:
    topic = f"scale-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=4)
    dsn = postgres_server.new_database(f"scale_{uuid.uuid4().hex[:8]}")
    procs = []
    try:
        a, url_a = _replica_safe(tmp_path, "a", dsn, kafka_broker.bootstrap, topic)
        b, url_b = _replica_safe(tmp_path, "b", dsn, kafka_broker.bootstrap, topic)
        procs += [a, b]
        rng = np.random.default_rng(1)
        models = [f"model-{i}" for i in range(8)]
        with httpx.Client() as c:
            for m in models:
                c.put(f"{url_b}/v1/models/{m}/versions/v1/reference", content=reference_bytes(rng, m, "v1", 2000))
        producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
        expected = 0
        now = time.time()

        def produce(n: int, offset: int) -> int:
            rows = 0
            for i in range(n):
                m = models[i % len(models)]
                p = window(rng, m, "v1", device=f"dev-{i % 5}", start=now - 1800 + (offset + i) % 1700,
                           length=1.0, n=50, shift=1.0 if m == "model-3" else 0.0)
                rows += p.rows
                producer.send(topic, key=m.encode(), value=envelope(p))
            producer.flush()
            return rows

        expected += produce(200, 0)
        assert wait_for(lambda: total_rows(url_b) > 0, 60)
        a.send_signal(signal.SIGKILL)  # mid-stream: part of the first batch may be uncommitted
        a.wait(timeout=10)
        expected += produce(200, 200)
        assert wait_for(lambda: total_rows(url_b) == expected, 120), (total_rows(url_b), expected)
        a2, url_a2 = _replica_safe(tmp_path, "a2", dsn, kafka_broker.bootstrap, topic)
        procs.append(a2)
        time.sleep(2.0)
        assert total_rows(url_a2) == total_rows(url_b) == expected
        until = time.time()
        for m in models:
            da = httpx.get(f"{url_a2}/v1/models/{m}/drift", params={"until": until, "since": now - 3600}).json()
            db = httpx.get(f"{url_b}/v1/models/{m}/drift", params={"until": until, "since": now - 3600}).json()
            assert da["current_rows"] == db["current_rows"]
            assert [(f["name"], f["drift_detected"]) for f in da["features"]] == \
                [(f["name"], f["drift_detected"]) for f in db["features"]]
        drifted = httpx.get(f"{url_b}/v1/models/model-3/drift", params={"until": until, "since": now - 3600}).json()
        assert {f["name"]: f["drift_detected"] for f in drifted["features"]}["a"] is True
        producer.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()


def _replica_safe(tmp_path, name: str, dsn: str, bootstrap: str, topic: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, DRIFTLINE_DATABASE_URL=dsn, DRIFTLINE_PORT=str(port), DRIFTLINE_KAFKA__ENABLED="true",
               DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=json.dumps([bootstrap]), DRIFTLINE_KAFKA__TOPIC=topic,
               DRIFTLINE_KAFKA__GROUP_ID=f"scale-{topic}", DRIFTLINE_EVALUATION__INTERVAL_SECONDS="3600")
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "driftline.apps.cli.main", "service"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    ok = wait_for(lambda: proc.poll() is not None or _safe_ready(url), 30)
    if not ok or proc.poll() is not None:
        proc.kill()
        pytest.fail(f"replica {name} did not start: {log_path.read_text()[-3000:]}")
    return proc, url


def test_a_record_too_large_for_the_dead_letter_topic_goes_as_headers_and_ingest_moves_on(tmp_path,
                                                                                            kafka_broker) -> None:
    """The dead-letter topic allows 4 KB: a 20 KB bad record is sent there without its value (its size in
    ``driftline-truncated``), a small one whole, and the envelope behind them in the partition is stored."""
    topic, dlq = f"env-{uuid.uuid4().hex[:8]}", f"dlq-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=1)
    with kafka_broker.admin() as admin:
        admin.create_topics({dlq: {"num_partitions": 1, "replication_factor": 1,
                                   "configs": {"max.message.bytes": "4096"}}}, timeout_ms=30000)
        admin.wait_for_topics([dlq], timeout_ms=30000)
    rng = np.random.default_rng(1)
    s = kafka_settings(tmp_path, kafka_broker, topic, dlq)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    big = b"DLNE" + bytes(20_000)
    for junk in (b"garbage", big):
        producer.send(topic, key=b"x", value=junk)
    p = window(rng, "model-a", "v1", device="d1", start=time.time() - 120)
    producer.send(topic, key=b"model-a", value=envelope(p))
    producer.flush()
    producer.close()
    with running_service(s) as url:
        assert wait_for(lambda: total_rows(url) == p.rows, 60), total_rows(url)
        assert wait_for(lambda: dead_lettered(url, 2), 20), httpx.get(f"{url}/metrics").text
        assert httpx.get(f"{url}/readyz").status_code == 200
    dead = read_dead_letters(kafka_broker, dlq)
    by_value = {m.value: dict(m.headers) for m in dead}
    assert set(by_value) == {b"garbage", None}, by_value
    assert by_value[None]["driftline-truncated"] == str(len(big)).encode()
    assert by_value[None]["driftline-source"] == f"{topic}/0/1".encode()
    assert "driftline-truncated" not in by_value[b"garbage"]
