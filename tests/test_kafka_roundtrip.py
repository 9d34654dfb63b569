"""Envelopes through a real Kafka broker come back as identical profiles (issue 2, acceptance 5)."""

from __future__ import annotations

import socket
import time
import uuid

import numpy as np
import pytest

from driftline.columns import NumericColumn
from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.wire import Envelope, decode_envelope, encode_envelope
from tests.harness.kafka import KafkaBroker

pytestmark = pytest.mark.kafka

RANKS = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0]


def make_profile(model: str, seed: int, rows: int) -> WindowProfile:
    """A window with numeric and categorical features and outputs, NaN/inf, latency and errors."""
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10, 1, rows)
    income[rng.random(rows) < 0.03] = np.nan
    income[:2] = np.inf
    profile = WindowProfile(StreamKey.of(model, f"v{seed}", "canary" if seed % 2 else "default",
                                         f"device-{seed}", {"site": "oslo"}),
                            1_700_000_000.0 + 60 * seed, 1_700_000_060.0 + 60 * seed,
                            ProfileConfig(categorical=frozenset({"label"})))
    profile.update(
        {"age": rng.normal(40, 12, rows), "income": income,
         "city": rng.choice(["oslo", "bergen", "tromso", "bodo"], size=rows)},
        {"score": rng.random(rows), "label": rng.integers(0, 3, rows)},
        latency_ms=rng.gamma(2.0, 3.0, rows),
        errors=seed,
    )
    return profile


def consume_all(broker: KafkaBroker, topic: str, group: str, expected: int, timeout: float = 60.0):
    """Read ``expected`` records from ``topic`` in consumer group ``group`` (bounded by ``timeout``)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False)
    records = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        consumer.commit()
    finally:
        consumer.close()
    return records


def produce(broker: KafkaBroker, topic: str, envelopes: list[Envelope]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(topic, key=env.profiles[0].key.model.encode(), value=encode_envelope(env))
                   for env in envelopes]
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(timeout=10)


def test_envelopes_round_trip_through_kafka(kafka_broker: KafkaBroker) -> None:
    topic = f"driftline.envelopes.rt-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=3)
    envelopes = [
        Envelope([make_profile(f"model-{i % 3}", seed=i, rows=500 + 700 * i),
                  make_profile(f"model-{i % 3}", seed=100 + i, rows=50)],
                 producer={"name": "driftline-sidecar", "version": "0.1.0", "device": f"dev-{i}"})
        for i in range(6)
    ]
    produce(kafka_broker, topic, envelopes)

    records = consume_all(kafka_broker, topic, group=f"roundtrip-{uuid.uuid4().hex[:6]}", expected=len(envelopes))

    assert len(records) == len(envelopes)
    sent = {env.envelope_id: env for env in envelopes}
    received = {}
    for record in records:
        env = decode_envelope(record.value)
        assert record.key == env.profiles[0].key.model.encode()
        received[env.envelope_id] = env
    assert received.keys() == sent.keys()
    for envelope_id, original in sent.items():
        got = received[envelope_id]
        assert got.producer == original.producer
        assert got.created_at == original.created_at
        assert len(got.profiles) == len(original.profiles)
        for a, b in zip(original.profiles, got.profiles, strict=True):
            assert b.to_dict() == a.to_dict()
            assert b.rows == a.rows and b.rows_profiled == a.rows_profiled
            assert b.key == a.key
            for name, col in a.columns.items():
                other = b.columns[name]
                assert other.count == col.count and other.missing == col.missing
                if isinstance(col, NumericColumn):
                    np.testing.assert_array_equal(other.quantiles(RANKS), col.quantiles(RANKS))
                    assert (other.nan, other.inf) == (col.nan, col.inf)
                else:
                    assert other.frequencies() == col.frequencies()
            assert b.runtime.errors == a.runtime.errors
            assert b.runtime.latency_quantile(0.9) == a.runtime.latency_quantile(0.9)


def test_broker_restart_keeps_data_and_port(kafka_broker: KafkaBroker) -> None:
    topic = f"driftline.restart-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic)
    first = Envelope([make_profile("restart", seed=7, rows=300)])
    produce(kafka_broker, topic, [first])
    bootstrap = kafka_broker.bootstrap

    assert kafka_broker.stop()
    kafka_broker.start()
    assert kafka_broker.bootstrap == bootstrap
    records = consume_all(kafka_broker, topic, group="restart", expected=1)
    assert [decode_envelope(r.value).envelope_id for r in records] == [first.envelope_id]

    # A crash (SIGKILL) loses nothing acknowledged with acks=all, and the group's offset survives.
    second = Envelope([make_profile("restart", seed=8, rows=300)])
    produce(kafka_broker, topic, [second])
    kafka_broker.kill()
    kafka_broker.start()
    records = consume_all(kafka_broker, topic, group="restart", expected=1)
    assert [decode_envelope(r.value).envelope_id for r in records] == [second.envelope_id]


@pytest.mark.slow
def test_broker_picks_new_ports_when_its_port_is_taken(tmp_path) -> None:
    broker = KafkaBroker(tmp_path / "kafka")
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", broker.port))  # bound, not listening: only the broker's bind fails
    taken = broker.port
    try:
        broker.start()
        assert broker.port != taken
        broker.create_topic("after-port-race")
    finally:
        broker.stop()
        squatter.close()
