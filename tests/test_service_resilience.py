"""Evaluation and stores that keep going: type changes, a broken model, disk full, a PostgreSQL restart.

Real stores (SQLite and the harness's PostgreSQL) behind the real app on a loopback port.
"""

from __future__ import annotations

import itertools
import time

import httpx
import numpy as np
import pytest

from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.service.app import create_app
from driftline.service.errors import StoreError
from driftline.service.settings import EvaluationSettings, ServiceSettings
from driftline.service.store import Store
from tests.harness.postgres import PostgresServer
from tests.service_support import envelope, reference_bytes, serving, window

_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'svc.sqlite'}"
    server = request.getfixturevalue("postgres_server")
    return str(server.new_database(f"resilience_{next(_names)}_{int(time.time() * 1000) % 10**8}"))


def _settings(url: str, **kw) -> ServiceSettings:
    base = dict(database_url=url, port=0, evaluation=EvaluationSettings(current_window_seconds=3600,
                                                                        interval_seconds=3600))
    base.update(kw)
    return ServiceSettings(**base)


def _zip_window(model: str, start: float, as_text: bool, n: int = 200) -> WindowProfile:
    cfg = ProfileConfig(categorical=frozenset({"zip"} if as_text else set()))
    p = WindowProfile(StreamKey.of(model, "v1", "baseline", "d1", {"site": "oslo"}), start, start + 60, cfg)
    rng = np.random.default_rng(int(start) % 1000)
    zips = ["01000"] * n if as_text else np.full(n, 1000.0)
    p.update({"zip": zips, "a": rng.normal(0, 1, n)}, {"score": rng.random(n)})
    return p


def test_a_type_change_is_reported_not_a_500_and_roll_up_keeps_both(store_url) -> None:
    rng = np.random.default_rng(0)
    now = time.time()
    app = create_app(_settings(store_url), background=False)
    s = _settings(store_url)
    with serving(app, s) as url, httpx.Client(base_url=url, timeout=30) as c:
        ref = WindowProfile(StreamKey.of("m", "v1", "reference", "training"), 0, 1)
        ref.update({"zip": np.full(500, 1000.0), "a": rng.normal(0, 1, 500)}, {"score": rng.random(500)})
        assert c.put("/v1/models/m/versions/v1/reference", content=envelope(ref)).status_code == 200
        for i, as_text in enumerate((False, True)):
            r = c.post("/v1/ingest", content=envelope(_zip_window("m", now - 300 + i * 60, as_text)))
            assert r.status_code == 200, r.text
        drift = c.get("/v1/models/m/drift")
        assert drift.status_code == 200, drift.text
        zipf = {f["name"]: f for f in drift.json()["features"]}["zip"]
        assert zipf["status"] == "type_change" and zipf["types"] == {"numeric": 200, "categorical": 200}
        assert zipf["drift_detected"] is False
        assert {f["name"]: f["status"] for f in drift.json()["features"]}["a"] in ("ok", "drift")
        issues = [i for i in drift.json()["data_quality"]["issues"] if i["column"] == "zip"]
        assert [i["signal"] for i in issues] == ["type_change"]
        # only strings in the range, numbers in the reference: the core's type_change, with both sides' counts
        text_only = c.get("/v1/models/m/drift", params={"since": now - 239, "until": now})
        assert text_only.status_code == 200
        z = {f["name"]: f for f in text_only.json()["features"]}["zip"]
        assert z["status"] == "type_change" and z["types"] == {"categorical": 200}
        assert z["rows"] == {"reference": 500, "current": 200}
        hist = c.get("/v1/models/m/drift/history")
        assert hist.status_code == 200 and hist.json()["history"]
        assert c.get("/v1/models/m/devices").status_code == 200
        assert c.get("/models/m").status_code == 200
        assert c.get("/").status_code == 200
        parts = app.state.parts
        app.state.background.run_once(now)
        snap = parts.evaluator.snapshot()
        assert snap.errors.get("drift", 0) == 0 and ("m", "v1") in snap.models
        # roll-up keeps the numeric and the text windows apart instead of failing: nothing is lost
        before = c.get("/v1/models").json()["models"][0]["rows"]
        parts.store.roll_up(now + 10 * 86400, raw_days=1, hourly_days=30)
        after = c.get("/v1/models").json()["models"][0]
        assert after["rows"] == before == 400 and after["windows"] == 2


def test_one_broken_model_never_skips_another(store_url) -> None:
    rng = np.random.default_rng(1)
    now = time.time()
    app = create_app(_settings(store_url), background=False)
    s = _settings(store_url)
    with serving(app, s) as url, httpx.Client(base_url=url, timeout=30) as c:
        for model in ("a_bad", "b_good"):
            assert c.put(f"/v1/models/{model}/versions/v1/reference",
                         content=reference_bytes(rng, model, "v1")).status_code == 200
            assert c.post("/v1/ingest", content=envelope(window(rng, model, "v1", start=now - 120))).status_code == 200
        parts = app.state.parts
        parts.store.execute("UPDATE windows SET profile = ? WHERE model = ?", (b"\x00corrupt", "a_bad"))
        bg = app.state.background
        bg.run_once(now)
        bg.run_once(now + 1)
        snap = parts.evaluator.snapshot()
        assert ("b_good", "v1") in snap.models and snap.models[("b_good", "v1")].drift is not None
        assert ("a_bad", "v1") not in snap.models
        assert snap.errors["drift"] == 2 and snap.errors.get("retention", 0) == 0  # roll-up ran on the first pass
        metrics = c.get("/metrics").text
        assert 'driftline_evaluation_errors_total{stage="drift"} 2.0' in metrics
        assert 'driftline_evaluation_errors_total{stage="retention"} 0.0' in metrics
        assert 'driftline_dataset_drift_share{model="b_good",version="v1"}' in metrics
        assert c.get("/v1/models/a_bad/drift").status_code == 503  # a corrupt row is the store's error
        assert c.get("/v1/models/b_good/drift").status_code == 200


def test_logged_once_per_failing_model(tmp_path, caplog) -> None:
    rng = np.random.default_rng(2)
    now = time.time()
    s = _settings(f"sqlite:///{tmp_path / 'x.sqlite'}")
    app = create_app(s, background=False)
    with serving(app, s) as url, httpx.Client(base_url=url, timeout=30) as c:
        c.put("/v1/models/m/versions/v1/reference", content=reference_bytes(rng, "m", "v1"))
        c.post("/v1/ingest", content=envelope(window(rng, "m", "v1", start=now - 120)))
        app.state.parts.store.execute("UPDATE windows SET profile = ?", (b"junk",))
        with caplog.at_level("INFO", logger="driftline.service.evaluation"):
            for i in range(3):
                app.state.background.run_once(now + i)
        failures = [r for r in caplog.records if "failed" in r.getMessage()]
        assert len(failures) == 1 and failures[0].exc_info is not None


def test_sqlite_disk_full_is_reported_as_disk_full_and_liveness_follows(tmp_path) -> None:
    rng = np.random.default_rng(3)
    s = _settings(f"sqlite:///{tmp_path / 'full.sqlite'}", liveness_store_failure_seconds=0.5)
    app = create_app(s, background=False)
    with serving(app, s) as url, httpx.Client(base_url=url, timeout=30) as c:
        store = app.state.parts.store
        assert c.get("/readyz").status_code == 200
        pages = store.query("PRAGMA page_count")[0][0]
        store.query(f"PRAGMA max_page_count = {pages}")  # the file cannot grow: a real SQLITE_FULL
        big = envelope(window(rng, "m", "v1", start=time.time() - 60, n=5000))
        r = c.post("/v1/ingest", content=big)
        assert r.status_code == 503
        body = r.json()
        assert "full" in body["error"] and "cannot rollback" not in body["error"], body
        time.sleep(0.6)
        r2 = c.post("/v1/ingest", content=big)
        assert r2.status_code == 503
        live = c.get("/healthz")
        assert live.status_code == 503 and "full" in live.json()["error"]
        store.query("PRAGMA max_page_count = 1073741823")
        assert c.post("/v1/ingest", content=big).status_code == 200
        assert c.get("/healthz").status_code == 200


def test_readiness_is_a_write(tmp_path) -> None:
    path = tmp_path / "ro.sqlite"
    Store(f"sqlite:///{path}").close()
    ro = Store(f"sqlite:///{path}")
    ro.query("PRAGMA query_only = ON")  # reads work, writes fail: what SELECT 1 alone would miss
    with pytest.raises(StoreError, match="readonly|read-only|query_only|attempt to write"):
        ro.probe_write()
    assert ro.query("SELECT 1") == [(1,)]
    assert ro.health.failing_for() >= 0.0 and ro.health.last_error
    ro.close()


@pytest.mark.postgres
def test_postgres_restart_under_a_live_service(tmp_path) -> None:
    rng = np.random.default_rng(4)
    pg = PostgresServer(tmp_path / "pg").start()
    try:
        dsn = pg.new_database("restart")
        s = _settings(dsn, liveness_store_failure_seconds=2.0, database_timeout_seconds=2.0)
        app = create_app(s, background=False)
        with serving(app, s) as url, httpx.Client(base_url=url, timeout=30) as c:
            assert c.put("/v1/models/m/versions/v1/reference", content=reference_bytes(rng, "m", "v1")).status_code == 200
            first = envelope(window(rng, "m", "v1", start=time.time() - 120))
            assert c.post("/v1/ingest", content=first).json()["result"] == "accepted"
            pg.kill_server()
            assert c.post("/v1/ingest", content=envelope(window(rng, "m", "v1", start=time.time() - 60))
                          ).status_code == 503
            assert c.get("/readyz").status_code == 503
            time.sleep(2.1)
            assert c.get("/readyz").status_code == 503
            assert c.get("/healthz").status_code == 503  # writes failed for longer than the configured 2 s
            pg.restart()
            back = time.monotonic()
            while c.get("/readyz").status_code != 200:
                assert time.monotonic() - back < 5.0, "not serving 5 s after PostgreSQL came back"
                time.sleep(0.1)
            assert c.get("/healthz").status_code == 200
            assert c.post("/v1/ingest", content=first).json()["result"] == "duplicate"  # the ledger survived
            again = envelope(window(rng, "m", "v1", start=time.time() - 30))
            assert c.post("/v1/ingest", content=again).json()["result"] == "accepted"
            assert c.get("/v1/models").json()["models"][0]["windows"] == 2
    finally:
        pg.stop()


def test_a_store_that_fails_as_a_whole_is_an_outage_not_a_poison_record() -> None:
    """Disk full, lost connections and shutdowns hold a Kafka batch; only other errors can blame a record."""
    import sqlite3

    import psycopg

    from driftline.service.errors import StoreError
    from driftline.service.store import is_outage

    assert is_outage(sqlite3.OperationalError("database or disk is full"))
    assert is_outage(psycopg.errors.DiskFull("could not extend file"))
    assert is_outage(psycopg.errors.AdminShutdown("terminating connection"))
    assert is_outage(psycopg.OperationalError("connection refused"))
    assert not is_outage(psycopg.errors.UniqueViolation("duplicate key"))
    assert not is_outage(psycopg.errors.NumericValueOutOfRange("value out of range"))
    assert not is_outage(sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert StoreError("x", outage=True).outage and not StoreError("x").outage


def test_replicas_starting_together_on_a_fresh_postgres_database_all_start(tmp_path) -> None:
    """Schema creation under an advisory lock: eight stores opened at once on one new database."""
    import threading

    from driftline.service.store import Store

    pg = PostgresServer(tmp_path / "pg").start()
    try:
        dsn = pg.new_database("together")
        errors: list[BaseException] = []
        stores: list[Store] = []
        go = threading.Barrier(8)

        def open_one() -> None:
            go.wait()
            try:
                stores.append(Store(dsn, pool_size=2))
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for st in stores:
            st.close()
        assert errors == [] and len(stores) == 8
    finally:
        pg.stop()
