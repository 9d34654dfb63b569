"""Kafka as operators expect, on a real broker: keys spread a model's fleet, an idempotent producer,
compression, records up to the envelope limit where the topic allows them, and the service's
consumer options passed through."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import httpx
import numpy as np
import pytest

from driftline.edge_sidecar.errors import DeliveryRejected, TransportError
from driftline.edge_sidecar.settings import KafkaTransportSettings
from driftline.edge_sidecar.transport import Outgoing, record_key
from driftline.edge_sidecar.transport.kafka import KafkaTransport
from driftline.service.settings import EvaluationSettings, KafkaSettings, ServiceSettings, kafka_options
from tests.harness.kafka import KafkaBroker
from tests.service_support import envelope, running_service, window

pytestmark = pytest.mark.kafka


def transport(broker: KafkaBroker, topic: str, **kw) -> KafkaTransport:
    return KafkaTransport.from_settings(KafkaTransportSettings(bootstrap_servers=[broker.bootstrap], topic=topic,
                                                               request_timeout_ms=5000, max_block_ms=5000, **kw))


def consume(broker: KafkaBroker, topic: str, n: int, timeout: float = 60.0) -> list:
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=f"t-{uuid.uuid4().hex[:8]}",
                      auto_offset_reset="earliest", enable_auto_commit=False)
    out: list = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            for batch in c.poll(timeout_ms=500).values():
                out.extend(batch)
    finally:
        c.close()
    return out


def test_keys_spread_one_models_fleet_over_partitions_and_keep_a_device_on_one(kafka_broker: KafkaBroker) -> None:
    topic = f"spread-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=4)
    rng = np.random.default_rng(0)
    t = transport(kafka_broker, topic)
    try:
        batch = []
        for i in range(3):
            for d in range(12):
                p = window(rng, "fraud", "v1", device=f"edge-{d}", start=1000.0 + 60 * i, n=20)
                batch.append(Outgoing(record_key("fraud", f"edge-{d}"), envelope(p, device=f"edge-{d}"), f"{i}-{d}"))
        assert t.send(batch) == [None] * len(batch)
        # an explicit idempotent producer: the broker gave it a producer id; acks from every in-sync replica
        producer = t._producer
        assert producer.config["enable_idempotence"] is True and producer.config["acks"] == -1
        assert producer._transaction_manager is not None and producer._transaction_manager.has_producer_id()
    finally:
        t.close()
    records = consume(kafka_broker, topic, len(batch))
    assert len(records) == len(batch)
    by_device: dict[bytes, set[int]] = {}
    for r in records:
        by_device.setdefault(r.key, set()).add(r.partition)
    assert all(len(parts) == 1 for parts in by_device.values()), by_device  # one device: one partition, in order
    used = {p for parts in by_device.values() for p in parts}
    assert len(used) >= 3, f"12 devices of one model landed on partitions {used}"
    assert set(by_device) == {f"fraud/edge-{d}".encode() for d in range(12)}
    assert record_key("fraud", "") == b"fraud"


def test_compression_option_round_trips_and_a_missing_codec_is_a_clear_error(kafka_broker: KafkaBroker) -> None:
    topic = f"gzip-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=1)
    rng = np.random.default_rng(1)
    data = envelope(window(rng, "m", "v1", start=0.0, n=50))
    t = transport(kafka_broker, topic, compression_type="gzip")
    try:
        assert t.send([Outgoing(b"m/d1", data, "e1")]) == [None]
        assert t._producer.config["compression_type"] == "gzip"
    finally:
        t.close()
    assert [r.value for r in consume(kafka_broker, topic, 1)] == [data]
    try:
        import lz4  # noqa: F401
    except ImportError:
        t = transport(kafka_broker, topic, compression_type="lz4")
        (err,) = t.send([Outgoing(b"m/d1", data, "e2")])
        assert isinstance(err, TransportError) and "lz4" in str(err)
        t.close()


def test_records_up_to_the_envelope_limit_need_the_topics_max_message_bytes(kafka_broker: KafkaBroker) -> None:
    """A 2 MiB envelope: delivered where the topic allows 5 MiB, refused for good (not retried) at 1 MiB."""
    big, small = f"big-{uuid.uuid4().hex[:8]}", f"small-{uuid.uuid4().hex[:8]}"
    with kafka_broker.admin() as admin:
        admin.create_topics({big: {"num_partitions": 1, "replication_factor": 1,
                                   "configs": {"max.message.bytes": str(5 * 1024 * 1024)}},
                             small: {"num_partitions": 1, "replication_factor": 1,
                                     "configs": {"max.message.bytes": str(1024 * 1024)}}}, timeout_ms=30000)
        admin.wait_for_topics([big, small], timeout_ms=30000)
    payload = os.urandom(2 * 1024 * 1024)  # incompressible, like a zlib-compressed envelope body
    for topic, ok in ((big, True), (small, False)):
        t = transport(kafka_broker, topic, extra={"delivery_timeout_ms": 10000})
        try:
            (res,) = t.send([Outgoing(b"m/d1", payload, topic)])
        finally:
            t.close()
        if ok:
            assert res is None
        else:
            assert isinstance(res, DeliveryRejected), res
    assert [len(r.value) for r in consume(kafka_broker, big, 1)] == [len(payload)]


def test_service_consumer_options_reach_kafka(tmp_path, kafka_broker: KafkaBroker) -> None:
    topic = f"opts-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=2)
    group = f"g-{topic}"
    client_id = f"driftline-{uuid.uuid4().hex[:6]}"
    s = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'k.sqlite'}", port=0,
                        evaluation=EvaluationSettings(interval_seconds=3600),
                        kafka=KafkaSettings(enabled=True, bootstrap_servers=[kafka_broker.bootstrap], topic=topic,
                                            group_id=group, consumer_options={
                                                "client_id": client_id, "max_partition_fetch_bytes": 4259840}))
    rng = np.random.default_rng(2)
    p = window(rng, "m", "v1", start=time.time() - 120)
    t = transport(kafka_broker, topic)
    try:
        with running_service(s) as url:
            assert t.send([Outgoing(record_key("m", "d1"), envelope(p), "x")]) == [None]
            deadline = time.monotonic() + 60
            while sum(m["rows"] for m in httpx.get(f"{url}/v1/models", timeout=5).json()["models"]) < p.rows:
                assert time.monotonic() < deadline, "the service did not consume"
                time.sleep(0.3)
            with kafka_broker.admin() as admin:
                desc = admin.describe_groups([group])[group]
            assert {m["client_id"] for m in desc["members"]} == {client_id}
    finally:
        t.close()
    with pytest.raises(ValueError, match="enable_auto_commit"):
        KafkaSettings(consumer_options={"enable_auto_commit": True})
    with pytest.raises(ValueError, match="enable.auto.commit"):  # the same property in librdkafka's spelling
        KafkaSettings(consumer_options={"enable.auto.commit": True})
    with pytest.raises(ValueError, match="No such configuration property"):
        KafkaSettings(consumer_options={"max_partition_fetch_bytez": 1})
    with pytest.raises(ValueError, match="compression"):
        KafkaSettings(producer_options={"compression.type": "zzz"})
    assert kafka_options({"session_timeout_ms": 30000, "check.crcs": True}) == {"session.timeout.ms": 30000,
                                                                                "check.crcs": "true"}
    # the old consumer's spelling of the fetch wait maps to librdkafka's, and librdkafka accepts it
    assert kafka_options({"fetch_max_wait_ms": 200}) == {"fetch.wait.max.ms": 200}
    assert KafkaSettings(consumer_options={"fetch_max_wait_ms": 200}).consumer_options == {"fetch_max_wait_ms": 200}


def test_tls_files_and_sasl_mechanism_stop_the_service_at_start(tmp_path) -> None:
    """A bad certificate or mechanism stops ``driftline service`` with its reason, not a reconnect loop;
    the settings themselves stay valid where the files are not mounted (a chart rendered in CI)."""
    missing = KafkaSettings(enabled=True, security_protocol="SSL", ssl_cafile=str(tmp_path / "missing.pem"))
    assert missing.security_problem() == f"kafka.ssl_cafile: {tmp_path / 'missing.pem'} is not a readable file"
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    assert "ssl.ca.location failed" in KafkaSettings(enabled=True, security_protocol="SSL",
                                                     ssl_cafile=str(not_pem)).security_problem()
    assert "Unsupported SASL mechanism: BOGUS" in KafkaSettings(
        enabled=True, security_protocol="SASL_SSL", sasl_mechanism="BOGUS").security_problem()
    ok = KafkaSettings(enabled=True, security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                       sasl_plain_username="u", sasl_plain_password="p")
    assert ok.security_problem() is None
    assert ok.security_properties() == {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                                        "sasl.username": "u", "sasl.password": "p"}
    assert KafkaSettings(enabled=False, security_protocol="SSL", ssl_cafile="/nope").security_problem() is None
    # the whole command: exit 2, one line naming the file, before anything listens
    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: sqlite:///{tmp_path / 'x.sqlite'}\nport: 0\n"
                      f"kafka: {{enabled: true, security_protocol: SSL, ssl_cafile: {tmp_path / 'missing.pem'}}}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    proc = subprocess.run([sys.executable, "-m", "driftline.apps.cli.main", "service", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "ssl_cafile" in proc.stderr and "is not a readable file" in proc.stderr
    assert "Traceback" not in proc.stderr
