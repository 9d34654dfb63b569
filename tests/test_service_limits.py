"""Caps on names over real HTTP on SQLite and PostgreSQL: refused with 422, counted, never a series."""

from __future__ import annotations

import re
import time

import httpx
import numpy as np
import pytest

from driftline.profile import StreamKey, WindowProfile
from driftline.service.settings import LimitSettings, RetrainSettings, RetrainTarget, ServiceSettings
from tests.service_support import PCFG, envelope, running_service, window


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'l.sqlite'}"
    server = request.getfixturevalue("postgres_server")
    return str(server.new_database(f"limits_{time.time_ns() % 10**10}"))


def _settings(url: str) -> ServiceSettings:
    return ServiceSettings(database_url=url, port=0,
                           limits=LimitSettings(max_models=3, max_versions_per_model=2, max_features_per_model=6,
                                                max_cohort_values=2),
                           retrain=RetrainSettings(targets=[RetrainTarget(name="t", url="http://127.0.0.1:9/x")],
                                                   secret="k", internal_policy=False))


def _extra(rng: np.random.Generator, model: str, feature: str, start: float) -> bytes:
    p = WindowProfile(StreamKey.of(model, "v1", "baseline", "d1", {"site": "oslo"}), start, start + 60, PCFG)
    p.update({"a": rng.normal(0, 1, 50), feature: rng.normal(0, 1, 50)}, {"score": rng.random(50)})
    return envelope(p)


def test_names_past_a_cap_are_refused_counted_and_never_a_series(store_url) -> None:
    rng = np.random.default_rng(0)
    now = time.time()
    with running_service(_settings(store_url)) as url, httpx.Client(base_url=url, timeout=30) as c:
        def post(data: bytes) -> httpx.Response:
            return c.post("/v1/ingest", content=data)

        for i in range(3):  # a window names a, b, city, score, label: 5 of the 6 allowed per model
            r = post(envelope(window(rng, f"m{i}", "v1", start=now - 60)))
            assert r.status_code == 200, r.text
        r = post(envelope(window(rng, "m3", "v1", start=now - 60)))
        assert r.status_code == 422 and "max models" in r.json()["error"]
        assert post(envelope(window(rng, "m0", "v2", start=now - 60))).status_code == 200
        r = post(envelope(window(rng, "m0", "v3", start=now - 60)))
        assert r.status_code == 422 and "max versions" in r.json()["error"]
        assert post(_extra(rng, "m1", "zz", now - 60)).status_code == 200  # the 6th name
        r = post(_extra(rng, "m1", "yy", now - 60))
        assert r.status_code == 422 and "max features" in r.json()["error"]
        assert post(envelope(window(rng, "m2", "v1", start=now - 60, site="lima"))).status_code == 200
        r = post(envelope(window(rng, "m2", "v1", start=now - 60, site="rome")))
        assert r.status_code == 422 and "max cohort_values" in r.json()["error"]
        # an envelope refused whole: its windows are not stored, known names still go in
        refused_twice = envelope(window(rng, "m3", "v1", start=now - 30))
        assert post(refused_twice).status_code == 422 and post(refused_twice).status_code == 422
        assert post(envelope(window(rng, "m0", "v1", start=now - 30))).status_code == 200
        models = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
        assert sorted(models) == ["m0", "m1", "m2"] and sorted(models["m0"]["versions"]) == ["v1", "v2"]
        text = c.get("/metrics").text
        assert 'driftline_limit_refusals_total{limit="models"} 3.0' in text
        for kind in ("versions", "features", "cohort_values"):
            assert f'driftline_limit_refusals_total{{limit="{kind}"}} 1.0' in text
        assert 'driftline_ingest_envelopes_total{result="limited",transport="http"} 6.0' in text
        assert set(re.findall(r'model="([^"]+)"', text)) == {"m0", "m1", "m2"}
        assert not re.search(r'cohort_value="rome"|version="v3"|feature="yy"', text)
    with running_service(_settings(store_url)) as url, httpx.Client(base_url=url, timeout=30) as c:
        # the caps hold across a restart (the catalog is in the store)
        assert c.post("/v1/ingest", content=envelope(window(rng, "m4", "v1", start=now - 20))).status_code == 422
        assert c.post("/v1/ingest", content=envelope(window(rng, "m1", "v1", start=now - 20))).status_code == 200


def test_alerts_for_unknown_models_are_ignored(store_url) -> None:
    rng = np.random.default_rng(1)
    with running_service(_settings(store_url)) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert c.post("/v1/ingest", content=envelope(window(rng, "real", "v1", start=time.time() - 60))
                      ).status_code == 200

        def alert(model: str, i: int) -> dict:
            return {"status": "firing", "fingerprint": f"f{i}", "startsAt": "2026-01-01T00:00:00Z",
                    "labels": {"alertname": "DriftlineRetrainModel", "driftline_action": "retrain",
                               "model": model, "version": "v1"}}

        storm = {"version": "4", "status": "firing", "alerts": [alert(f"made-up-{i}", i) for i in range(2000)]}
        r = c.post("/v1/alertmanager", json=storm)
        assert r.status_code == 200 and r.json() == {"received": 2000, "queued": 0, "ignored": 2000}
        r = c.post("/v1/alertmanager", json={"version": "4", "status": "firing", "alerts": [alert("real", 1)]})
        assert r.json()["queued"] == 1
        text = c.get("/metrics").text
        assert "driftline_retrain_outbox_depth 1.0" in text and "made-up" not in text
