"""Structure-aware fuzzing of both ingest paths on real parts: the same 10,000 envelopes over HTTP
(uvicorn on loopback) and through a real Kafka broker. Valid envelopes come from the project's encoder and
are then mutated (tests/fuzz_support.py); the local decoder says which ones must be accepted.

Asserted: no 5xx and no 4xx for a valid envelope; every invalid one is refused (400) or
dead-lettered; the consumer never stalls (it reaches the end of every partition); totals are exact
for everything accepted. Seeded: a failure names the seed and the case index that reproduce it.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from kafka import KafkaProducer

from driftline.service.settings import EvaluationSettings, KafkaSettings, ServiceSettings
from tests.fuzz_support import Case, cases, expected
from tests.test_kafka_supervision import metric
from tests.test_service_kafka import total_rows, wait_for

N = 10_000
SEED = 14


@dataclass(frozen=True)
class Plan:
    """The cases, whether each must be accepted, and the rows each valid envelope id must add."""

    cases: list[Case]
    valid: list[bool]
    rows: dict[str, int]

    @property
    def invalid(self) -> int:
        return self.valid.count(False)


@pytest.fixture(scope="module")
def plan() -> Plan:
    todo = list(cases(SEED, N, time.time()))
    valid, rows = [], {}
    for c in todo:
        env = expected(c.data)
        valid.append(env is not None)
        if env is not None:
            rows[env.envelope_id] = env.rows
    return Plan(todo, valid, rows)


def service_settings(tmp_path, name: str, **kw) -> ServiceSettings:
    return ServiceSettings(database_url=f"sqlite:///{tmp_path / f'{name}.sqlite'}", port=0,
                           evaluation=EvaluationSettings(interval_seconds=3600), **kw)


def test_fuzz_http_ingest(tmp_path, plan: Plan) -> None:
    from tests.service_support import running_service

    todo, rows, invalid = plan.cases, plan.rows, plan.invalid
    assert len(todo) >= 10_000 and 1000 < invalid < N - 1000
    outcomes: Counter[str] = Counter()
    with running_service(service_settings(tmp_path, "http")) as url:
        def send(batch: list[Case]) -> list[tuple[Case, int, str]]:
            out = []
            with httpx.Client(base_url=url, timeout=30) as c:
                for case in batch:
                    r = c.post("/v1/ingest", content=case.data)
                    out.append((case, r.status_code, r.json().get("result", "") if r.status_code == 200 else ""))
            return out

        with ThreadPoolExecutor(4) as pool:
            results = [x for part in pool.map(send, [todo[i::4] for i in range(4)]) for x in part]
        for case, status, result in results:
            valid = plan.valid[case.index]
            where = f"seed {SEED} case {case.index} ({case.mutation})"
            assert status < 500, f"{where}: {status}"
            assert status == (200 if valid else 400), f"{where}: {status}"
            outcomes[result or "refused"] += 1
        assert total_rows(url) == sum(rows.values())
        assert httpx.get(f"{url}/readyz").status_code == 200
    assert outcomes["accepted"] == len(rows) and outcomes["refused"] == invalid


def test_fuzz_kafka_ingest(tmp_path, kafka_broker, plan: Plan) -> None:
    from tests.service_support import running_service

    todo, rows, invalid = plan.cases, plan.rows, plan.invalid
    topic, dlq = f"fuzz-{uuid.uuid4().hex[:8]}", f"fuzz-dlq-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=3)
    kafka_broker.create_topic(dlq, partitions=1)
    k = KafkaSettings(enabled=True, bootstrap_servers=[kafka_broker.bootstrap], topic=topic, dead_letter_topic=dlq,
                      group_id=f"g-{topic}", health_interval_seconds=1.0)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all", linger_ms=20,
                             max_request_size=8 * 1024 * 1024)
    for case in todo:
        producer.send(topic, key=str(case.index % 3).encode(), value=case.data)
    producer.flush()
    producer.close()
    with running_service(service_settings(tmp_path, "kafka", kafka=k)) as url:
        def done() -> bool:
            lags = [metric(url, f'driftline_kafka_consumer_lag_messages{{partition="{p}"}}') for p in range(3)]
            return lags == [0.0, 0.0, 0.0] and metric(
                url, 'driftline_ingest_envelopes_total{result="dead_lettered",transport="kafka"}') == invalid

        assert wait_for(done, 240, step=1.0), (total_rows(url), sum(rows.values()), invalid)
        assert total_rows(url) == sum(rows.values())
        accepted = metric(url, 'driftline_ingest_envelopes_total{result="accepted",transport="kafka"}')
        duplicate = metric(url, 'driftline_ingest_envelopes_total{result="duplicate",transport="kafka"}') or 0.0
        assert accepted == len(rows) and accepted + duplicate == N - invalid
        assert metric(url, "driftline_kafka_consumer_up") == 1.0
