"""Secure by default, over real HTTP: listening beyond loopback, read and device tokens, the report's
token and rate limit, retraining secrets."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from driftline.apps.cli.main import main
from driftline.service.settings import RetrainSettings, RetrainTarget, ServiceSettings, exposure_problem
from tests.harness.ports import free_port
from tests.service_support import envelope, running_service, window


def _settings(tmp_path, **kw) -> ServiceSettings:
    return ServiceSettings(database_url=f"sqlite:///{tmp_path / 's.sqlite'}", port=0, **kw)


def test_refuses_to_listen_beyond_loopback_without_a_write_token(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DRIFTLINE_DATABASE_URL", f"sqlite:///{tmp_path / 'c.sqlite'}")
    assert main(["service", "--host", "0.0.0.0", "--check"]) == 2
    err = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0 without api_token" in err and "--insecure" in err
    assert main(["service", "--host", "0.0.0.0", "--insecure", "--check"]) == 0
    assert exposure_problem(ServiceSettings(host="127.0.0.2")) is None
    assert exposure_problem(ServiceSettings(host="::1")) is None
    assert exposure_problem(ServiceSettings(host="10.0.0.5")) is not None
    assert exposure_problem(ServiceSettings(host="")) is not None  # every interface
    monkeypatch.setenv("DRIFTLINE_API_TOKEN", "w")
    assert main(["service", "--host", "0.0.0.0", "--check"]) == 0


def test_insecure_listens_with_a_warning(tmp_path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env["DRIFTLINE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'i.sqlite'}"
    proc = subprocess.Popen([sys.executable, "-m", "driftline.apps.cli.main", "service", "--host", "0.0.0.0", "--port",
                             str(port), "--insecure"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "service did not start"
            time.sleep(0.2)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "WARNING: --insecure" in err and "no api_token" in err


def test_read_token_guards_reads_and_leaves_health_and_metrics_open(tmp_path) -> None:
    with running_service(_settings(tmp_path, read_token="r", api_token="w")) as url, httpx.Client(base_url=url) as c:
        for path in ("/v1/models", "/", "/v1/models/m/drift", "/v1/models/m/canary"):
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401, path
        assert c.post("/v1/models/m/canary/gate/check").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer r"}).status_code == 200
        assert c.get("/v1/models", headers={"Authorization": "Bearer w"}).status_code == 200  # write implies read
        for path in ("/healthz", "/readyz", "/metrics"):
            assert c.get(path).status_code == 200, path
        data = envelope(window(np.random.default_rng(0), "m", "v1", start=time.time() - 60))
        assert c.post("/v1/ingest", content=data, headers={"Authorization": "Bearer r"}).status_code == 401


def test_a_device_token_writes_only_its_own_windows(tmp_path) -> None:
    rng = np.random.default_rng(1)
    s = _settings(tmp_path, api_token="w", device_tokens={"d1": "t-d1", "d2": "t-d2"})
    with running_service(s) as url, httpx.Client(base_url=url) as c:
        now = time.time()
        own = envelope(window(rng, "m", "v1", device="d1", start=now - 60))
        other = envelope(window(rng, "m", "v1", device="d2", start=now - 60))
        mixed = envelope(window(rng, "m", "v1", device="d1", start=now - 120),
                         window(rng, "m", "v1", device="d2", start=now - 120))
        d1 = {"Authorization": "Bearer t-d1"}
        assert c.post("/v1/ingest", content=own, headers=d1).json()["result"] == "accepted"
        r = c.post("/v1/ingest", content=other, headers=d1)
        assert r.status_code == 403 and "d2" in r.json()["error"]
        assert c.post("/v1/ingest", content=mixed, headers=d1).status_code == 403
        assert c.post("/v1/ingest", content=other).status_code == 401
        assert c.post("/v1/ingest", content=other, headers={"Authorization": "Bearer t-d2"}).status_code == 200
        assert c.post("/v1/ingest", content=mixed, headers={"Authorization": "Bearer w"}).status_code == 200
        # a device token is for ingest only
        assert c.put("/v1/models/m/versions/v1/reference", content=own, headers=d1).status_code == 401
        assert c.get("/v1/models").json()["models"][0]["windows"] == 4
        assert 'driftline_ingest_envelopes_total{result="forbidden",transport="http"} 2.0' in c.get("/metrics").text


def test_the_report_needs_a_token_and_is_rate_limited(tmp_path) -> None:
    with running_service(_settings(tmp_path)) as url, httpx.Client(base_url=url) as c:
        r = c.get("/v1/models/m/report.html")
        assert r.status_code == 403 and "read_token or api_token" in r.json()["error"]
    with running_service(_settings(tmp_path, read_token="r", report_rate_per_minute=1)) as url, \
            httpx.Client(base_url=url) as c:
        assert c.get("/v1/models/m/report.html").status_code == 401
        auth = {"Authorization": "Bearer r"}
        first = [c.get("/v1/models/m/report.html", headers=auth).status_code for _ in range(2)]
        assert first == [404, 404]  # a burst of two passes the limit (no data: 404)
        limited = c.get("/v1/models/m/report.html", headers=auth)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert c.get("/v1/models", headers=auth).status_code == 200  # other reads are not limited


def test_retraining_targets_need_a_real_secret() -> None:
    target = RetrainTarget(name="t", url="http://127.0.0.1:9/x")
    with pytest.raises(ValidationError, match="retrain.secret is required"):
        RetrainSettings(targets=[target])
    with pytest.raises(ValidationError, match="placeholder"):
        RetrainSettings(targets=[target], secret="change-me")
    assert RetrainSettings(targets=[target], secret="a-long-random-value").secret is not None
    assert RetrainSettings().secret is None  # no targets: no secret needed
