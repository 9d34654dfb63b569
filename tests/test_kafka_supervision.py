"""The Kafka consumer on a real broker: permanent errors are dead-lettered and committed past, and the
consumer is supervised (broker absent at start, lost later) with readiness and gauges that say so."""

from __future__ import annotations

import time
import uuid

import httpx
import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from driftline.service.settings import EvaluationSettings, KafkaSettings, ServiceSettings
from driftline.wire import Envelope, encode_envelope
from tests.harness.ports import free_port
from tests.service_support import envelope, running_service, window
from tests.test_service_kafka import total_rows, wait_for


def kafka_settings(tmp_path, bootstrap: str, topic: str, dlq: str, **kw) -> ServiceSettings:
    k = KafkaSettings(enabled=True, bootstrap_servers=[bootstrap], topic=topic, dead_letter_topic=dlq,
                      group_id=f"g-{topic}", reconnect_backoff_initial_seconds=0.2, reconnect_backoff_max_seconds=2,
                      health_interval_seconds=1.0, request_timeout_ms=3000, **kw)
    return ServiceSettings(database_url=f"sqlite:///{tmp_path / f'{topic}.sqlite'}", port=0, kafka=k,
                           evaluation=EvaluationSettings(interval_seconds=3600))


def metric(url: str, line_start: str) -> float | None:
    try:
        text = httpx.get(f"{url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return None


def ready(url: str) -> int:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code
    except httpx.HTTPError:
        return -1


def test_poison_records_are_dead_lettered_and_never_delay_others(tmp_path, kafka_broker) -> None:
    topic, dlq = f"poison-{uuid.uuid4().hex[:8]}", f"poison-dlq-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=1)  # one partition: the bad records sit in the good ones' way
    kafka_broker.create_topic(dlq, partitions=1)
    rng = np.random.default_rng(0)
    now = time.time()
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    huge = window(rng, "m", "v1", start=now - 300)
    huge.rows = 2**63
    nul = window(rng, "m\x00x", "v1", start=now - 300)
    bad = [encode_envelope(Envelope([huge])), encode_envelope(Envelope([nul])), b"garbage",
           envelope(window(rng, "m", "v1", start=now - 300, length=0.0))]
    expected = 0
    s = kafka_settings(tmp_path, kafka_broker.bootstrap, topic, dlq)
    with running_service(s) as url:
        for i in range(12):
            if i % 3 == 0:
                producer.send(topic, key=b"m", value=bad[i // 3])
            p = window(rng, "m", "v1", device=f"d{i}", start=now - 200 + i)
            expected += p.rows
            producer.send(topic, key=b"m", value=envelope(p))
        producer.flush()
        assert wait_for(lambda: total_rows(url) == expected, 60), (total_rows(url), expected)
        assert wait_for(lambda: metric(url, 'driftline_ingest_envelopes_total{result="dead_lettered",'
                                            'transport="kafka"}') == 4.0, 20)
        assert metric(url, 'driftline_kafka_dead_letters_total{reason="malformed"}') == 4.0
        assert metric(url, "driftline_kafka_consumer_up") == 1.0
        assert wait_for(lambda: metric(url, 'driftline_kafka_consumer_lag_messages{partition="0"}') == 0.0, 20)
    producer.close()
    check = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, group_id=f"g-{topic}", enable_auto_commit=False)
    committed = check.committed(TopicPartition(topic, 0))
    check.close()
    assert committed == 16  # past every record, bad ones included
    dead = list(KafkaConsumer(dlq, bootstrap_servers=kafka_broker.bootstrap, auto_offset_reset="earliest",
                              consumer_timeout_ms=5000, group_id=None))
    assert sorted(m.value for m in dead) == sorted(bad)
    for m in dead:
        h = dict(m.headers)
        assert h["driftline-reason"] == b"malformed" and h["driftline-error"]
        assert h["driftline-source"].startswith(f"{topic}/0/".encode())
    errors = sorted(dict(m.headers)["driftline-error"].decode() for m in dead)
    assert any("outside [0," in e for e in errors) and any("control characters" in e for e in errors)
    assert any("does not end after it starts" in e for e in errors)


def test_broker_absent_at_start_then_lost_then_back(tmp_path, kafka_broker) -> None:
    topic, dlq = f"sup-{uuid.uuid4().hex[:8]}", f"sup-dlq-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=2)
    kafka_broker.create_topic(dlq, partitions=1)
    rng = np.random.default_rng(1)
    now = time.time()
    dead_end = f"127.0.0.1:{free_port()}"  # nothing listens here: the broker is absent
    with running_service(kafka_settings(tmp_path, dead_end, topic, dlq)) as url:
        assert wait_for(lambda: (metric(url, "driftline_kafka_consumer_reconnects_total") or 0) >= 2, 60)
        assert ready(url) == 503 and metric(url, "driftline_kafka_consumer_up") == 0.0
        assert httpx.get(f"{url}/healthz").status_code == 200  # alive, just not ready
    s = kafka_settings(tmp_path, kafka_broker.bootstrap, topic, dlq)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    expected = 0

    def produce(n: int) -> None:
        nonlocal expected
        for i in range(n):
            p = window(rng, f"m{i % 2}", "v1", device=f"d{i}", start=now - 300 + i)
            expected += p.rows
            producer.send(topic, key=p.key.model.encode(), value=envelope(p))
        producer.flush()

    try:
        with running_service(s) as url:
            produce(6)
            assert wait_for(lambda: total_rows(url) == expected and ready(url) == 200, 60)
            assert wait_for(lambda: metric(url, 'driftline_kafka_consumer_lag_messages{partition="1"}') == 0.0, 20)
            producer.close()
            kafka_broker.kill()  # lost, as in a crash
            assert wait_for(lambda: ready(url) == 503, 45)
            assert metric(url, "driftline_kafka_consumer_up") == 0.0
            kafka_broker.start()
            producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
            produce(6)
            assert wait_for(lambda: total_rows(url) == expected and ready(url) == 200, 120), \
                (total_rows(url), expected, ready(url))
            assert metric(url, "driftline_kafka_consumer_up") == 1.0
    finally:
        producer.close()
        if not kafka_broker.running:
            kafka_broker.start()


def test_reconnect_delay_is_bounded_with_jitter() -> None:
    import random

    from driftline.service.kafka_consumer import reconnect_delay

    rng = random.Random(3)
    for failures in range(1, 80):
        base = min(30.0, 1.0 * 2 ** (failures - 1))
        assert base / 2 <= reconnect_delay(failures, 1.0, 30.0, rng) <= base
    assert len({round(reconnect_delay(6, 1.0, 30.0, rng), 6) for _ in range(20)}) > 10


def test_a_fetch_holds_a_poll_batch_and_the_largest_envelope() -> None:
    from driftline.service.kafka_consumer import FETCH_BYTES, fetch_bytes

    # kafka-python's 1 MiB default held ~25 envelopes of 50 features: a round trip per 25 records
    assert FETCH_BYTES >= 200 * (41_600 + 100)  # a default poll batch (max_poll_records) of such envelopes, framed
    assert fetch_bytes(4 * 1024 * 1024) == FETCH_BYTES
    assert fetch_bytes(16 * 1024 * 1024) == 16 * 1024 * 1024 + 64 * 1024  # never less than one envelope
    assert KafkaSettings().max_poll_records == 200
