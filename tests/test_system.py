"""The whole pipeline on real parts under faults and hostile input (tests/harness/system.py).

One fleet for the module: 20 ``driftline sidecar`` processes (Kafka transport, disk spools; one with
a small spool, one with its spool on an 8 MB tmpfs), a Kafka 4.1.1 broker, two ``driftline service``
replicas in one consumer group on one PostgreSQL database (its cluster on a 192 MB tmpfs),
Prometheus with the shipped rules (``for:`` shortened to 2 s) and Alertmanager. A feeder posts rows to
every sidecar at a steady rate. The tests run in file order, each injecting one fault while traffic
flows, then checking the same three things:

* every row a sidecar acknowledged is stored exactly once (per device, from PostgreSQL);
* the service's drift results equal a clean run: the acknowledged rows profiled in this process and
  compared with the same reference and decision rule (exact row counts, the same verdicts, scores
  within the sketches' error);
* the alerts firing are exactly the ones the phase should fire (none, for a fault the pipeline
  absorbs).

The outage lasts ``DRIFTLINE_SYSTEM_OUTAGE_SECONDS`` (default 15 s: longer than the producers'
delivery timeout of 8 s, so every in-flight send fails and the spools take over, the path a longer
outage takes too; ``bench/bench_system.py`` runs minutes).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.harness.kafka import KafkaBroker
from tests.harness.system import MODELS, System, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]
OUTAGE_SECONDS = float(os.environ.get("DRIFTLINE_SYSTEM_OUTAGE_SECONDS", "15"))
# the fleet's steady traffic must never fire these; a phase that should fire one says so
NO_ALERTS: set[tuple[str, str]] = set()
# with DRIFTLINE_SYSTEM_REPORT=path, each test appends one JSON line of what it measured (read by
# bench/bench_faults.py for docs/benchmarks.md); the assertions do not depend on it
REPORT = os.environ.get("DRIFTLINE_SYSTEM_REPORT", "")
_phase: dict[str, object] = {}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, kafka_broker: KafkaBroker,
           prometheus_binaries) -> Iterator[System]:
    sys_ = System(tmp_path_factory.mktemp("system"), kafka_broker, prometheus_binaries, sidecars=20)
    try:
        sys_.start()
        yield sys_
    finally:
        sys_.stop()
        if not kafka_broker.running:
            kafka_broker.start()


@pytest.fixture(autouse=True)
def feeding(system: System, request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts with the whole fleet fed, whatever an earlier one left behind."""
    for s in system.sidecars:
        system.feeder.release(s.device)
    system.resume()
    _phase.clear()
    t0 = time.monotonic()
    yield
    if REPORT:
        record = {"test": request.node.name,
                  "seconds": round(time.monotonic() - t0, 1), **_phase}
        with open(REPORT, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def assert_exact_and_clean(system: System) -> dict[str, int]:
    """Every acknowledged row stored once, and drift equal to the clean run's, for both models."""
    t0 = time.monotonic()
    acked = system.checkpoint()
    _phase["drain_seconds"] = round(time.monotonic() - t0, 1)  # feeder stopped -> every acked row stored once
    _phase["rows_acknowledged"] = sum(acked.values())
    _phase["devices"] = len([d for d, n in acked.items() if n])
    assert sum(acked.values()) > 0
    for model in MODELS:
        got = system.drift(model)
        clean = system.clean_report(model).to_dict()
        assert got["dataset_drift"] == clean["dataset_drift"] or abs(
            clean["drift_share"] - clean["config"]["drift_share_threshold"]) <= 0.2, (model, got, clean)
        assert got["current_rows"] == clean["current_rows"] and got["reference_rows"] == clean["reference_rows"]
        by_name = {c["name"]: c for c in got["features"] + got["outputs"]}
        for col in clean["features"] + clean["outputs"]:
            mine = by_name[col["name"]]
            assert mine["rows"] == col["rows"], (model, col["name"], mine["rows"], col["rows"])
            # the same verdict, unless the effect sits within the sketches' error of its threshold (two
            # sketch builds of the same rows may then fall on either side of it)
            effect, threshold = col.get("effect"), col.get("threshold")
            borderline = effect is not None and abs(effect - threshold) <= max(0.03, 0.15 * threshold)
            if not borderline:
                assert mine["drift_detected"] == col["drift_detected"], (model, col["name"], mine, col)
            for method in ("ks",):
                if col["scores"].get(method) is not None:
                    # two sketch builds of the same rows: each within its KLL rank error (~1.3% at k=200)
                    assert abs(mine["scores"][method] - col["scores"][method]) <= 0.03, (model, col["name"])
    system.resume()
    return acked


def assert_alerts(system: System, expected: set[tuple[str, str]], settle: float = 6.0) -> None:
    """Over ``settle`` seconds (rules fire 2 s after their condition holds), only ``expected`` fire."""
    deadline = time.monotonic() + settle
    seen: set[tuple[str, str]] = set()
    while time.monotonic() < deadline:
        seen |= system.firing()
        time.sleep(1.0)
    _phase["alerts_firing"] = sorted(f"{name}{{model={model}}}" if model else name for name, model in seen)
    assert seen == expected, f"firing {sorted(seen)}, expected {sorted(expected)}"


def traffic(seconds: float) -> None:
    time.sleep(seconds)


def test_steady_fleet_every_row_once_drift_as_a_clean_run_no_alert(system: System) -> None:
    traffic(6)
    acked = assert_exact_and_clean(system)
    assert len([d for d, n in acked.items() if n]) == 20
    assert_alerts(system, NO_ALERTS)


def test_broker_restart(system: System) -> None:
    traffic(2)
    system.restart_broker()
    traffic(3)
    assert_exact_and_clean(system)
    assert_alerts(system, NO_ALERTS)


def test_one_replica_sigkilled_then_restarted(system: System) -> None:
    traffic(2)
    system.kill_replica(1)
    traffic(5)  # the other replica takes over the partitions after the group's session timeout
    system.start_replica(1)
    traffic(2)
    assert_exact_and_clean(system)
    assert_alerts(system, NO_ALERTS)  # one replica was always up: no page


def test_postgres_restart(system: System) -> None:
    traffic(2)
    system.restart_postgres()
    traffic(3)
    assert_exact_and_clean(system)
    assert_alerts(system, NO_ALERTS)


def test_broker_cut_off_for_the_outage_then_restored(system: System) -> None:
    traffic(2)
    system.pause_broker()
    try:
        traffic(OUTAGE_SECONDS)
        pending = sum(s.health()["spool"]["pending"] for s in system.sidecars if s.running)
        assert pending > 0  # the fleet kept windows on disk while the broker was away
    finally:
        system.resume_broker()
    traffic(3)
    assert_exact_and_clean(system)
    assert_alerts(system, NO_ALERTS)


def test_sidecar_sigkilled_with_a_full_spool(system: System) -> None:
    small = system.sidecars[0]  # its spool holds ~60 kB: an outage makes it merge windows
    system.pause_broker()
    try:
        # nothing leaves while the broker is away: the small spool fills up and has to merge
        wait_until(lambda: small.health()["spool"]["merged"] > 0, 90, "the small sidecar's spool merging")
        system.feeder.hold(small.device)
        wait_until(lambda: (h := small.health())["open_windows"] == 0 and h["buffered_rows"] == 0
                   and h["unspooled_windows"] == 0, 30, "the small sidecar's rows all in its spool")
        h = small.health()
        assert h["spool"]["merged"] > 0 and h["spool"]["dropped"] == 0, h  # full: it merged, lost nothing
        assert h["spool"]["pending_rows"] > 0
        small.kill()
    finally:
        system.resume_broker()
    small.start()
    system.feeder.release(small.device)
    traffic(3)
    assert_exact_and_clean(system)
    assert_alerts(system, NO_ALERTS)


def test_disk_full_under_a_spool(system: System) -> None:
    dev = system.sidecars[1]
    mount = system.spool_mounts[dev.device]
    # drain its spool first: a delivered window's file, deleted, would free room on the full disk
    system.feeder.hold(dev.device)
    system.quiesce([dev.device])
    errors_before = dev.health()["spool_write_errors"]
    mount.fill()
    system.feeder.release(dev.device)
    try:
        wait_until(lambda: dev.health()["spool_write_errors"] > errors_before, 30,
                   "the spool write failing on the full disk")
        traffic(3)
        assert dev.health()["unspooled_windows"] > 0  # kept in memory, retried every tick
    finally:
        mount.free()
    traffic(2)
    assert_exact_and_clean(system)
    assert dev.health()["windows_dropped"] == 0
    assert_alerts(system, NO_ALERTS)


def test_disk_full_under_the_database(system: System) -> None:
    assert system.db_mount is not None and system.pg is not None
    system.db_mount.fill()
    try:
        traffic(8)
    finally:
        system.db_mount.free()
    if not system.pg._proc or not system.pg._proc.running:  # noqa: SLF001 - PostgreSQL may stop on a full WAL disk
        system.pg.restart()
    traffic(3)
    assert_exact_and_clean(system)
    assert_alerts(system, NO_ALERTS)


def test_hostile_input_while_running(system: System) -> None:
    from kafka import KafkaProducer

    from tests.fuzz_support import cases
    from tests.harness.system import WRITE_TOKEN, _http

    rng = random.Random(7)
    now = time.time()
    fuzz = list(cases(23, 120, now))
    producer = KafkaProducer(bootstrap_servers=system.broker.bootstrap, acks="all", max_request_size=8 << 20)
    statuses: list[int] = []
    try:
        for i, case in enumerate(fuzz):
            if i % 2:
                producer.send(system.topic, key=b"hostile", value=case.data)
            else:
                statuses.append(_http(system.replicas[i % 4 // 2].port, "POST", "/v1/ingest", case.data,
                                      headers={"Content-Type": "application/octet-stream",
                                               "Authorization": f"Bearer {WRITE_TOKEN}"})[0])
        producer.flush(30)
    finally:
        producer.close(5)
    big = rng.randbytes(5 * 1024 * 1024)
    auth = {"Authorization": f"Bearer {WRITE_TOKEN}"}
    statuses.append(_http(system.replicas[0].port, "POST", "/v1/ingest", big, headers=auth)[0])
    assert _http(system.replicas[1].port, "POST", "/v1/ingest", fuzz[0].data)[0] == 401  # no token
    assert _http(system.replicas[1].port, "POST", "/v1/ingest", fuzz[0].data,
                 headers={"Authorization": "Bearer wrong"})[0] in (401, 403)
    # wrong types through the sidecars' local API, for a model of their own (its rows are not the fleet's)
    wrong = (b'{"model": "odd", "features": {"x0": "not a number", "x1": [1, 2]}, "outputs": {"score": {}}}\n'
             b'{"model": "odd", "features": 7}\n{"features": {"x0": 1}}\nnot json at all\n[1, 2]\n')
    side = []
    for s in system.sidecars[:5]:
        side.append(_http(s.port, "POST", "/v1/observe", wrong, headers={"Content-Type": "application/x-ndjson"})[0])
    # the OIP proxy: wrong types, shapes and bodies reach the model server, which refuses them; the
    # proxy passes its answers through and counts what it could not capture
    proxied = system.sidecars[2]
    rejected_before = sum(proxied.health()["rejected"].values())
    bad_oip = [b"{not json", b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": ["a", "b"]}]}',
               b'{"inputs": [{"name": "x", "shape": [3, 2], "datatype": "FP32", "data": [1, 2]}]}',
               b'{"inputs": "nope"}', b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", '
               b'"parameters": {"binary_data_size": 999}}]}']
    proxy_status = [_http(system.proxy_port, "POST", "/v2/models/odd/infer", body,
                          headers={"Content-Type": "application/json"})[0] for body in bad_oip]
    assert all(400 <= st < 500 for st in proxy_status), proxy_status
    # one the model server answers (it ignores BYTES tensors) but whose tensors disagree on their rows:
    # the caller gets the model's answer, the sidecar counts a rejected capture
    odd = (b'{"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [1, 2]}, '
           b'{"name": "s", "shape": [5], "datatype": "BYTES", "data": ["a"]}]}')
    assert _http(system.proxy_port, "POST", "/v2/models/odd/infer", odd,
                 headers={"Content-Type": "application/json"})[0] == 200
    wait_until(lambda: sum(proxied.health()["rejected"].values()) >= rejected_before + 1, 20,
               "the proxy counting the request it could not capture")
    # schemathesis over HTTP against a live replica, without and with the write token: no 5xx
    for headers in ([], ["-H", f"Authorization: Bearer {WRITE_TOKEN}"]):
        run = subprocess.run([sys.executable, "-m", "schemathesis.cli", "run", f"{system.replicas[0].url}/openapi.json",
                              "-c", "not_a_server_error", "-n", "3", "--phases", "examples,fuzzing", "--seed", "7",
                              "--request-timeout", "20", *headers], capture_output=True, text=True, timeout=400,
                             check=False)
        assert run.returncode == 0, (headers, run.stdout[-4000:], run.stderr[-2000:])
    assert statuses and all(st < 500 for st in statuses), statuses
    assert 413 in statuses
    assert all(st < 500 for st in side), side
    assert all(r.running for r in system.replicas)
    traffic(3)
    assert_exact_and_clean(system)
    # the rejects are counted, and the pipeline alert on them fires while they go on (its rate needs
    # samples on both sides of them); nothing else fires
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and ("DriftlineIngestRejects", "") not in system.firing():
        assert _http(system.replicas[0].port, "POST", "/v1/ingest", b"not an envelope", headers=auth)[0] == 400
        time.sleep(0.25)
    assert_alerts(system, {("DriftlineIngestRejects", "")}, settle=4)


def test_drift_fires_for_the_shifted_model_only(system: System) -> None:
    with system.feeder.lock:
        system.feeder.shift["churn"] = 2.0
    traffic(10)
    assert_exact_and_clean(system)
    wait_until(lambda: ("DriftlineDatasetDrift", "churn") in system.firing(), 60, "dataset drift alert for churn")
    firing = system.firing()
    assert all(model in ("churn", "") for _, model in firing), firing
    assert ("DriftlineDatasetDrift", "fraud") not in firing
    wait_until(lambda: ("DriftlineDatasetDrift", "churn") in system.alertmanager_alerts(), 30,
               "Alertmanager holding the drift alert")
