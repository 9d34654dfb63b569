"""HTTP ingest on a real service: permanent errors are 4xx, decoding never blocks the event loop, and
store arithmetic cannot overflow on SQLite or PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
import zlib

import httpx
import numpy as np
import pytest

from driftline.service.errors import Unprocessable
from driftline.service.settings import EvaluationSettings, ServiceSettings
from driftline.service.store import Store
from driftline.wire import HEADER, MAGIC, Envelope, encode_envelope
from driftline.wirecheck import MAX_COUNT
from tests.service_support import running_service, window


def settings(tmp_path, **kw) -> ServiceSettings:
    return ServiceSettings(database_url=kw.pop("database_url", f"sqlite:///{tmp_path / 'r.sqlite'}"), port=0,
                           evaluation=EvaluationSettings(interval_seconds=3600), **kw)


def with_rows(p, rows: int) -> bytes:
    p.rows = rows
    return encode_envelope(Envelope([p], producer={"name": "t"}))


def nested_arrays() -> bytes:
    body = zlib.compress(b"\x81\xa8profiles\xdc\xff\xff" + (b"\xdc\xff\xff" + b"\x90" * 65535) * 200, 9)
    return HEADER.pack(MAGIC, 1, 0, 1, uuid.uuid4().bytes, len(body), zlib.crc32(body)) + body


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_huge_counts_are_4xx_and_never_poison_reads(tmp_path, db, request) -> None:
    url_db = (request.getfixturevalue("postgres_server").new_database(f"big_{uuid.uuid4().hex[:8]}")
              if db == "postgres" else f"sqlite:///{tmp_path / 'big.sqlite'}")
    rng = np.random.default_rng(0)
    now = time.time()
    with running_service(settings(tmp_path, database_url=url_db)) as url, httpx.Client(base_url=url) as c:
        for rows in (2**63, 2**62, 2**62):
            r = c.post("/v1/ingest", content=with_rows(window(rng, "m", "v1", start=now - 300), rows))
            assert r.status_code == 400 and "outside [0," in r.json()["detail"], r.text
        expected = 0
        for i in range(3):  # the largest counts the spec allows still add up exactly
            p = window(rng, "m", "v1", start=now - 200 + i)
            assert c.post("/v1/ingest", content=with_rows(p, MAX_COUNT)).status_code == 200
            expected += MAX_COUNT
        models = c.get("/v1/models")
        assert models.status_code == 200 and models.json()["models"][0]["rows"] == expected
        assert c.get("/v1/models/m/drift").status_code in (200, 404)
        assert c.get("/readyz").status_code == 200
        metrics = c.get("/metrics").text
        assert 'driftline_ingest_envelopes_total{result="rejected",transport="http"} 3.0' in metrics


def test_store_checks_counts_before_storing(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    p = window(np.random.default_rng(1), "m", "v1", start=100.0)
    p.rows = 2**63
    with pytest.raises(Unprocessable, match="outside"):
        store.ingest(Envelope([p]), "http")
    assert store.models() == []
    store.close()


def test_roll_up_never_merges_past_the_count_bound(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'roll.sqlite'}")
    rng = np.random.default_rng(2)
    for i in range(3):
        p = window(rng, "m", "v1", start=3600.0 + i * 60)
        p.rows = MAX_COUNT
        store.ingest(Envelope([p]), "http", now=4000.0)
    store.roll_up(now=10 * 86400.0, raw_days=1, hourly_days=30)
    rows = store.windows("m")
    assert len(rows) == 3 and all(r.rows == MAX_COUNT for r in rows)
    assert store.models()[0]["rows"] == 3 * MAX_COUNT
    store.close()


def test_healthz_answers_while_hostile_envelopes_decode(tmp_path) -> None:
    bad = nested_arrays()
    codes: list[int] = []
    with running_service(settings(tmp_path)) as url:
        def flood() -> None:
            with httpx.Client(base_url=url, timeout=60) as c:
                for _ in range(4):
                    codes.append(c.post("/v1/ingest", content=bad).status_code)

        threads = [threading.Thread(target=flood) for _ in range(3)]
        for t in threads:
            t.start()
        health = []
        with httpx.Client(base_url=url, timeout=5) as c:
            while any(t.is_alive() for t in threads):
                health.append(c.get("/healthz").status_code)  # a stalled loop would time out here
        for t in threads:
            t.join()
    assert codes == [400] * 12
    assert health and set(health) == {200}


def test_sidecar_quarantines_a_window_the_service_refuses_with_a_4xx(tmp_path) -> None:
    from driftline.edge_sidecar.metrics import SidecarCollector, sidecar_registry
    from driftline.edge_sidecar.monitor import Monitor
    from driftline.edge_sidecar.shipper import Shipper
    from driftline.edge_sidecar.spool import Spool
    from driftline.edge_sidecar.transport.http import HttpTransport
    from driftline.profile import StreamKey, WindowProfile

    rng = np.random.default_rng(3)
    now = time.time()
    big = window(rng, "m", "v1", start=now - 300, n=2000)  # several KB: over the service's limit
    small = WindowProfile(StreamKey.of("m", "v1", "baseline", "d1"), now - 200, now - 140).update({}, rows_observed=7)
    spool = Spool(tmp_path / "spool", 10**8, fsync=False)
    spool.put(big)
    spool.put(small)
    with running_service(settings(tmp_path, max_body_bytes=1024)) as url:
        shipper = Shipper(spool, HttpTransport(url, timeout=5), backoff_initial=0.05, backoff_max=0.2).start()
        try:
            assert shipper.drain(30)  # the refused window does not hold the one behind it
        finally:
            shipper.stop()
        assert httpx.get(f"{url}/v1/models").json()["models"][0]["rows"] == 7
    kept = list((tmp_path / "spool" / "rejected").glob("*.dle"))
    assert len(kept) == 1 and "413" in kept[0].with_name(kept[0].name + ".why").read_text()
    assert spool.stats().rejected == 1 and shipper.rejected == 1
    monitor = Monitor.configure(model="m", model_version="1", background=False)
    reg = sidecar_registry(SidecarCollector(monitor, spool, shipper))
    assert reg.get_sample_value("driftline_sidecar_spool_quarantined_total") == 1.0
    spool.close()


def test_sidecar_refuses_stream_names_the_wire_refuses() -> None:
    from driftline.edge_sidecar.errors import ObserveError
    from driftline.edge_sidecar.inputs import label

    with pytest.raises(ObserveError, match="control characters") as exc:
        label("fraud\x00", "model")
    assert exc.value.reason == "malformed"
    assert label("fraud-v2 über", "model") == "fraud-v2 über"
