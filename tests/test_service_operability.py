"""The service as an SRE runs it: self-metrics, fleet state rebuilt from the store after a restart,
one truth across replicas (a PostgreSQL advisory-lock leader), JSON logs, OpenAPI and local Swagger UI."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from driftline.service.settings import EvaluationSettings, ServiceSettings
from driftline.wire import Envelope, encode_envelope
from tests.service_support import reference_bytes, running_service, window


def settings(url: str, **kw) -> ServiceSettings:
    base = dict(database_url=url, port=0,
                evaluation=EvaluationSettings(current_window_seconds=3600, interval_seconds=3600))
    base.update(kw)
    return ServiceSettings(**base)


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def device_envelope(p, device: str, *, started_at: float, cpu: float) -> bytes:
    return encode_envelope(Envelope([p], producer={
        "name": "driftline-sidecar", "version": "test", "device": device, "spool_pending": "2",
        "spool_oldest_age_s": "4.0", "rss_bytes": "5000000", "cpu_seconds": f"{cpu}", "started_at": f"{started_at}"}))


def feed(url: str, rng: np.random.Generator, now: float, *, devices=("d1", "d2"), minutes: int = 3) -> int:
    """A reference and ``minutes`` one-minute windows per device; d1's sidecar restarts half-way."""
    rows = 0
    with httpx.Client(base_url=url, timeout=30) as c:
        c.put("/v1/models/m/versions/v1/reference", content=reference_bytes(rng, "m", "v1")).raise_for_status()
        for i in range(minutes):
            for dev in devices:
                p = window(rng, "m", "v1", device=dev, start=now - 600 + i * 60, site="oslo" if dev == "d1" else "lima")
                rows += p.rows
                restarted = dev == "d1" and i >= minutes // 2
                env = device_envelope(p, dev, started_at=2000.0 if restarted else 1000.0,
                                      cpu=1.0 + i if restarted else 10.0 + i)
                assert c.post("/v1/ingest", content=env).json()["result"] == "accepted"
    return rows


FLEET = ("driftline_observations_total", "driftline_windows_total", "driftline_last_window_end_timestamp_seconds",
         "driftline_cohort_observations_total", "driftline_cohort_last_window_end_timestamp_seconds",
         "driftline_edge_devices_reporting", "driftline_edge_spool_pending_windows",
         "driftline_edge_sidecar_cpu_seconds_total", "driftline_edge_sidecar_resident_memory_bytes",
         "driftline_ingest_delivery_lag_seconds")


def fleet_view(s: dict) -> dict:
    return {k: v for k, v in s.items() if k[0] in FLEET and k[0] != "driftline_ingest_delivery_lag_seconds"}


def test_runtime_collectors_and_duration_histograms(tmp_path) -> None:
    rng = np.random.default_rng(1)
    cfg = settings(f"sqlite:///{tmp_path / 's.sqlite'}",
                   evaluation=EvaluationSettings(current_window_seconds=3600, interval_seconds=0.2))
    with running_service(cfg) as url, httpx.Client(base_url=url, timeout=30) as c:
        feed(url, rng, time.time(), minutes=2)
        assert c.get("/v1/models/m/drift").status_code == 200
        assert c.get("/v1/models/nope/drift").status_code == 404
        for i in range(5):  # a hostile client: every path different; the label stays one value
            assert c.get(f"/no/such/path/{i}").status_code == 404
        r = c.get("/healthz", headers={"X-Request-ID": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123"
        assert len(c.get("/healthz").headers["x-request-id"]) == 32
        time.sleep(1.0)
        s = samples(url)
    hist = "driftline_http_request_duration_seconds_count"
    assert s[(hist, (("method", "POST"), ("route", "/v1/ingest"), ("status_class", "2xx")))] == 4
    assert s[(hist, (("method", "GET"), ("route", "/v1/models/{model}/drift"), ("status_class", "2xx")))] == 1
    assert s[(hist, (("method", "GET"), ("route", "/v1/models/{model}/drift"), ("status_class", "4xx")))] == 1
    assert s[(hist, (("method", "GET"), ("route", "unmatched"), ("status_class", "4xx")))] == 5
    routes = {dict(k[1])["route"] for k in s if k[0] == hist}
    assert not any("nope" in r or "no/such" in r for r in routes)
    assert s[("driftline_ingest_batch_duration_seconds_count", (("transport", "http"),))] == 4
    assert s[("driftline_evaluation_pass_duration_seconds_count", (("result", "ok"),))] >= 2
    assert s[("driftline_evaluation_pass_duration_seconds_count", (("result", "error"),))] == 0
    assert s[("process_resident_memory_bytes", ())] > 10_000_000
    assert s[("process_cpu_seconds_total", ())] > 0
    assert s[("process_open_fds", ())] > 0
    assert any(k[0] == "python_info" for k in s) and any(k[0] == "python_gc_collections_total" for k in s)
    # every family the service exposes is in the catalogue
    import re
    from pathlib import Path

    catalogue = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", catalogue, flags=re.M))
    undocumented = {name for name, _ in s
                    if name not in documented and re.sub(r"_(bucket|count|sum|created)$", "", name) not in documented}
    assert undocumented == set()


def test_fleet_state_is_rebuilt_from_the_store_after_a_restart(tmp_path) -> None:
    rng = np.random.default_rng(2)
    now = time.time()
    cfg = settings(f"sqlite:///{tmp_path / 's.sqlite'}")
    with running_service(cfg) as url:
        rows = feed(url, rng, now, minutes=4)
        before = samples(url)
    assert before[("driftline_observations_total", (("model", "m"), ("variant", "baseline"), ("version", "v1")))] == rows
    # d1 restarted half-way (started_at 1000 -> 2000): its CPU counter goes on from 11, not back to 1
    # (d1: 10, 11 then 3, 4 -> 11 + 4 = 15; d2: 13)
    assert before[("driftline_edge_sidecar_cpu_seconds_total", (("model", "m"),))] == 15 + 13
    cfg.port = 0
    with running_service(cfg) as url:  # nothing ingested since the start
        after = samples(url)
    assert fleet_view(after) == fleet_view(before)
    for name in FLEET:
        assert any(k[0] == name for k in after), name
    assert after[("driftline_edge_devices_reporting", (("cohort_label", "site"), ("cohort_value", "oslo"),
                                                      ("model", "m")))] == 1
    # the per-process counters start again, as counters of a new process do
    assert after.get(("driftline_ingest_envelopes_total", (("result", "accepted"), ("transport", "http"))), 0) == 0


def test_device_reports_from_an_older_life_or_out_of_order_never_lower_the_cpu_counter() -> None:
    from driftline.service.fleet import DeviceLife, merge_life

    life = merge_life(None, DeviceLife(100.0, 0.0, 5.0))
    life = merge_life(life, DeviceLife(100.0, 0.0, 3.0))  # late report of the same life
    assert life == DeviceLife(100.0, 0.0, 5.0)
    life = merge_life(life, DeviceLife(200.0, 0.0, 1.0))  # restarted
    assert life.total == 6.0
    assert merge_life(life, DeviceLife(100.0, 0.0, 9.0)) == life  # a report of the previous life, late


@pytest.mark.postgres
def test_two_replicas_on_postgres_one_leader_exposes_fleet_state_and_hands_over(tmp_path, postgres_server) -> None:
    """Replicas split the ingest; one exposes fleet state (the store's totals), both their own counters."""
    from contextlib import ExitStack

    rng = np.random.default_rng(3)
    db = postgres_server.new_database("driftline_replicas")
    now = time.time()
    fast = EvaluationSettings(current_window_seconds=3600, interval_seconds=0.3)
    stacks = [ExitStack(), ExitStack()]
    try:
        urls = [st.enter_context(running_service(settings(db, evaluation=fast))) for st in stacks]
        rows = 0
        with httpx.Client(timeout=30) as c:
            c.put(f"{urls[0]}/v1/models/m/versions/v1/reference", content=reference_bytes(rng, "m", "v1")
                  ).raise_for_status()
            for i in range(6):  # a load balancer: alternate replicas
                for dev in ("d1", "d2"):
                    p = window(rng, "m", "v1", device=dev, start=now - 600 + i * 60)
                    rows += p.rows
                    url = urls[(i + (dev == "d2")) % 2]
                    c.post(f"{url}/v1/ingest", content=device_envelope(p, dev, started_at=1.0, cpu=i + 1.0)
                           ).raise_for_status()
        obs = ("driftline_observations_total", (("model", "m"), ("variant", "baseline"), ("version", "v1")))
        cpu = ("driftline_edge_sidecar_cpu_seconds_total", (("model", "m"),))
        deadline = time.monotonic() + 20
        while True:  # the background passes write device reports; the leader re-reads the store
            got = [samples(u) for u in urls]
            leaders = [i for i, s in enumerate(got) if s.get(("driftline_leader", ())) == 1]
            if len(leaders) == 1 and got[leaders[0]].get(cpu) == 12.0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert len(leaders) == 1, [s.get(("driftline_leader", ())) for s in got]
        lead = leaders[0]
        leader, follower = got[lead], got[1 - lead]
        assert follower[("driftline_leader", ())] == 0
        assert not [k for k in follower if k[0] in FLEET or k[0].startswith(("driftline_feature", "driftline_dataset"))]
        # per-process counters sum to the truth; fleet state is the store's, from one replica
        env = ("driftline_ingest_envelopes_total", (("result", "accepted"), ("transport", "http")))
        assert got[0][env] == got[1][env] == 6
        assert leader[obs] == rows and leader[cpu] == 12.0
        assert leader[("driftline_edge_devices_reporting", (("cohort_label", "site"), ("cohort_value", "oslo"),
                                                           ("model", "m")))] == 2
        assert ("driftline_dataset_drift", (("model", "m"), ("version", "v1"))) in leader
        # the leader goes away: the other replica takes the lock and exposes the same fleet state
        stacks[lead].close()
        deadline = time.monotonic() + 20
        while samples(urls[1 - lead]).get(("driftline_leader", ())) != 1:
            assert time.monotonic() < deadline, "no replica took over"
            time.sleep(0.3)
        took_over = samples(urls[1 - lead])
        assert fleet_view(took_over) == fleet_view(leader)
        assert ("driftline_dataset_drift", (("model", "m"), ("version", "v1"))) in took_over
    finally:
        for st in stacks:
            st.close()


def _fleet_on(url: str):  # noqa: ANN202 - a Fleet and its store on a real database
    from driftline.service.fleet import Fleet, Leadership
    from driftline.service.parts import IngestStats
    from driftline.service.store import Store

    store = Store(url)
    return Fleet(store, IngestStats(), Leadership(url)), store


def _report(device: int, cpu: float) -> dict:
    return {"seen": time.time(), "cohort": {"site": "oslo"}, "started_at": 1.0, "cpu_seconds": cpu,
            "rss_bytes": 1000 + device}


@pytest.mark.postgres
def test_replicas_flushing_the_same_devices_at_once_never_deadlock(postgres_server) -> None:
    """Two replicas write reports of the same 40 devices, queued in opposite orders, at the same moment,
    20 times: rows go in one order, so each flush waits for the other instead of deadlocking, and the
    store ends with the highest CPU counter of every device."""
    import threading

    url = postgres_server.new_database("driftline_flush_order")
    (a, sa), (b, sb) = _fleet_on(url), _fleet_on(url)
    errors: list[BaseException] = []
    try:
        for round_ in range(20):
            for i in range(40):
                a._queue("m", f"d{i:02d}", _report(i, round_ * 2.0))
                b._queue("m", f"d{39 - i:02d}", _report(39 - i, round_ * 2.0 + 1))
            go = threading.Barrier(2)

            def flush(fleet, go=go) -> None:  # noqa: ANN001
                go.wait(5)
                try:
                    fleet.flush()
                except BaseException as exc:  # noqa: BLE001 - the assertion below names it
                    errors.append(exc)

            threads = [threading.Thread(target=flush, args=(f,)) for f in (a, b)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        assert errors == []
        cpu = dict(sa.query("SELECT source, cpu_last FROM device_reports WHERE model = 'm'"))
        assert len(cpu) == 40 and set(cpu.values()) == {39.0}
    finally:
        sa.close()
        sb.close()


def test_a_failed_flush_keeps_the_newest_report_of_each_device_for_the_next(tmp_path, monkeypatch) -> None:
    """The database refuses one flush: the reports stay queued (the newest of each device life, with the
    highest CPU counter seen) and the next flush writes them; nothing is lost to a transient error."""
    from driftline.service.errors import StoreError

    fleet, store = _fleet_on(f"sqlite:///{tmp_path / 'f.sqlite'}")
    try:
        for cpu in (1.0, 5.0, 3.0):  # the newest report of d1 carries 3.0; the counter's high mark is 5.0
            fleet._queue("m", "d1", {**_report(1, cpu), "seen": 100.0 + cpu if cpu != 3.0 else 200.0})
        fleet._queue("m", "d2", _report(2, 7.0))
        real = store.transaction

        def refuse():  # noqa: ANN202
            raise StoreError("database write failed: injected")

        monkeypatch.setattr(store, "transaction", refuse)
        with pytest.raises(StoreError):
            fleet.flush()
        monkeypatch.setattr(store, "transaction", real)
        fleet._queue("m", "d2", {**_report(2, 8.0), "seen": time.time() + 1})  # arrived meanwhile: newer
        assert fleet.flush() == 2
        rows = dict(store.query("SELECT source, cpu_last FROM device_reports"))
        assert rows == {"d1": 5.0, "d2": 8.0}
        assert fleet.flush() == 0  # written once, not again
    finally:
        store.close()
