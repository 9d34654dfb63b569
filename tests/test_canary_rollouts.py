"""Canary experiments per rollout, over real HTTP on the real store: identity, isolation, persistence, typing."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from driftline.service.settings import EvaluationSettings, ServiceSettings
from tests.service_support import envelope, running_service, window

DEFAULTS = {"baseline_version": "v1", "canary_version": "v2", "min_rows": 600, "min_duration_seconds": 0}
STEP = 0.05  # each window covers 50 ms of wall time from now on, so data never reaches into the next rollout


def settings(path, **kw) -> ServiceSettings:
    url = str(path) if str(path).startswith("postgresql") else f"sqlite:///{path}"
    base = dict(database_url=url, port=0,
                evaluation=EvaluationSettings(current_window_seconds=3600, interval_seconds=3600))
    base.update(kw)
    return ServiceSettings(**base)


def flagger(name: str, checksum: str, phase: str = "Progressing", **meta: str) -> dict:
    return {"name": name, "namespace": "models", "phase": phase, "checksum": checksum, "metadata": meta}


def feed(c: httpx.Client, rng: np.random.Generator, start: float, n: int, *, bad: bool, version: str = "v2") -> None:
    for i in range(n):
        for ver, variant in (("v1", "baseline"), (version, "canary")):
            harm = bad and ver == version
            p = window(rng, "m", ver, variant=variant, start=start + i * STEP, length=STEP, n=1000,
                       score_shift=-0.2 if harm else 0.0, latency=6.0 if harm else 3.0)
            assert c.post("/v1/ingest", content=envelope(p)).status_code == 200


def test_bad_config_is_refused_whole_and_stores_nothing(tmp_path) -> None:
    with running_service(settings(tmp_path / "s.sqlite")) as url, httpx.Client(base_url=url) as c:
        for bad in ({**DEFAULTS, "min_rows": "abc"}, {**DEFAULTS, "alpha": 2}, {**DEFAULTS, "nope": 1},
                    {**DEFAULTS, "guardrails": [{"metric": "accuracy"}]}, {**DEFAULTS, "canary_version": "v1"},
                    {**DEFAULTS, "min_duration_seconds": 100, "max_duration_seconds": 10}, {"baseline_version": "v1"}):
            r = c.put("/v1/models/m/canary", json=bad)
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["detail"], r.text
        assert c.get("/v1/models/m/canary").status_code == 404
        assert c.get("/v1/models/m/canary/experiments").json() == []
        # with no defaults a controller's call cannot start an experiment (nor grow the store)
        r = c.post("/v1/models/m/canary/gate/check", json=flagger("fraud", "abc"))
        assert r.status_code == 404 and "defaults" in r.json()["error"]
        assert c.get("/v1/models/m/canary/argo", params={"rollout": "x"}).status_code == 404
        assert c.get("/v1/canary/experiments").json() == []
        # a good body after the bad ones works, and strings that are numbers are read as numbers
        r = c.put("/v1/models/m/canary", json={**DEFAULTS, "min_rows": "700"})
        assert r.status_code == 200 and r.json()["verdict"] == "continue"
        assert c.get("/v1/models/m/canary/argo").json()["verdict"] == "continue"


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_each_rollout_is_its_own_experiment_and_survives_restarts_and_replicas(tmp_path, request, engine) -> None:
    rng = np.random.default_rng(3)
    db = (tmp_path / "shared.sqlite" if engine == "sqlite"
          else request.getfixturevalue("postgres_server").new_database("driftline_rollouts"))
    with running_service(settings(db)) as url, httpx.Client(base_url=url) as c:
        assert c.put("/v1/models/m/canary", json=DEFAULTS).status_code == 200
        # rollout 1 (Flagger revision abc): its first call starts it with the defaults, no rows yet
        first = c.post("/v1/models/m/canary/gate/check", json=flagger("fraud", "abc"))
        assert first.status_code == 200 and first.json()["rows"] == {"baseline": 0, "canary": 0}
        assert first.json()["rollout"] == "flagger:models/fraud@abc"
        feed(c, rng, time.time(), 6, bad=True)
        r = c.post("/v1/models/m/canary/gate/check", json=flagger("fraud", "abc"))
        assert r.status_code == 412 and r.json()["verdict"] == "rollback"
        assert c.post("/v1/models/m/canary/gate/rollback", json=flagger("fraud", "abc")).status_code == 200
    # a restart: the decision and the history are in the store
    with running_service(settings(db)) as url, httpx.Client(base_url=url) as c:
        r = c.get("/v1/models/m/canary", params={"rollout": "flagger:models/fraud@abc"}).json()
        assert r["verdict"] == "rollback" and r["status"] == "rolled_back"
        assert [h["gate"] for h in r["history"]] == ["check", "check", "rollback"]
        # rollout 2 (a new revision, checksum def, naming its own canary version): a fresh experiment that
        # sees only data from its own start, so the earlier rollback does not carry over
        time.sleep(7 * STEP)
        r2 = c.post("/v1/models/m/canary/gate/check", json=flagger("fraud", "def", canary_version="v3"))
        assert r2.status_code == 200 and r2.json()["verdict"] == "continue"
        assert r2.json()["rows"] == {"baseline": 0, "canary": 0}
        assert c.post("/v1/models/m/canary/gate/promote", json=flagger("fraud", "def")).status_code == 412
        feed(c, rng, time.time(), 6, bad=False, version="v3")
        # a second replica on the same store judges the same experiment and agrees
        with running_service(settings(db)) as url2, httpx.Client(base_url=url2) as c2:
            verdicts = {c.post("/v1/models/m/canary/gate/promote", json=flagger("fraud", "def")).json()["verdict"],
                        c2.post("/v1/models/m/canary/gate/promote", json=flagger("fraud", "def")).json()["verdict"]}
            assert verdicts == {"promote"}, c.get("/v1/models/m/canary").json()["reasons"]
            listed = c2.get("/v1/models/m/canary/experiments").json()
        by_rollout = {e["rollout"]: e for e in listed}
        assert by_rollout["flagger:models/fraud@def"]["status"] == "promoted"
        assert by_rollout["flagger:models/fraud@def"]["canary_version"] == "v3"
        assert by_rollout["flagger:models/fraud@abc"]["status"] == "rolled_back"
        assert listed[0]["rollout"] == "flagger:models/fraud@def"  # newest first
        # a promoted experiment stays promoted: the rollback hook does not fire after it
        assert c.post("/v1/models/m/canary/gate/rollback", json=flagger("fraud", "def")).status_code == 412
        # Argo: the pod-template hash names the rollout; a new hash is a new experiment
        a = c.get("/v1/models/m/canary/argo", params={"rollout": "7f9c", "canary_version": "v3"}).json()
        assert a["rollout"] == "argo:7f9c" and a["verdict"] == "continue" and a["canary_rows"] == 0
        assert c.get("/v1/models/m/canary/argo", params={"rollout": "bad id!"}).status_code == 400
        page = c.get("/models/m").text
        assert "flagger:models/fraud@def" in page and "rolled_back" in page and "argo:7f9c" in page
        metrics = c.get("/metrics").text
        assert 'canary_version="v3",driftline_canary_verdict="continue",model="m"} 1.0' in metrics


def test_an_undecided_experiment_becomes_inconclusive_at_its_maximum_duration(tmp_path) -> None:
    with running_service(settings(tmp_path / "s.sqlite")) as url, httpx.Client(base_url=url) as c:
        cfg = {**DEFAULTS, "min_duration_seconds": 0, "max_duration_seconds": 0.3}
        assert c.put("/v1/models/m/canary", json=cfg).status_code == 200
        assert c.get("/v1/models/m/canary/argo", params={"rollout": "h1"}).json()["verdict"] == "continue"
        time.sleep(0.4)
        a = c.get("/v1/models/m/canary/argo", params={"rollout": "h1"}).json()
        assert a["verdict"] == "inconclusive" and a["inconclusive"] and not a["promote"] and not a["rollback"]
        check = c.post("/v1/models/m/canary/gate/check", json={"name": "x", "metadata": {"rollout": "argo:h1"}})
        assert check.status_code == 412 and check.json()["status"] == "inconclusive"
