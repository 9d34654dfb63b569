"""End to end on real parts: service -> Prometheus (rules from alerts/) -> Alertmanager -> service -> retrainer.

The test copy of the rules shortens every ``for:`` to 2 s (documented here, nothing else changes),
Prometheus scrapes and evaluates every second, and Alertmanager groups for one second.
"""

from __future__ import annotations

import re
import time

import httpx
import numpy as np
import yaml

from driftline.service.settings import EvaluationSettings, RetrainSettings, RetrainTarget, ServiceSettings
from tests.harness.ports import free_port
from tests.harness.prometheus import AlertmanagerServer, PrometheusServer
from tests.service_support import envelope, reference_bytes, running_service, window
from tests.test_service_api import Retrainer

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def feed(url: str, rng: np.random.Generator, model: str, shift: float) -> None:
    now = time.time()
    with httpx.Client(base_url=url) as c:
        c.put(f"/v1/models/{model}/versions/v1/reference", content=reference_bytes(rng, model, "v1")).raise_for_status()
        for i in range(5):
            for dev in ("d1", "d2"):
                p = window(rng, model, "v1", device=dev, start=now - 300 + i * 60, shift=shift)
                c.post("/v1/ingest", content=envelope(p, device=dev)).raise_for_status()


def test_drift_pages_and_retrains_exactly_once(tmp_path, prometheus_binaries) -> None:
    rng = np.random.default_rng(0)
    hook = Retrainer("e2e-secret", fail_first=2)
    port = free_port()
    settings = ServiceSettings(
        database_url=f"sqlite:///{tmp_path / 'e2e.sqlite'}", port=port,
        evaluation=EvaluationSettings(current_window_seconds=3600, interval_seconds=0.5, drift_share_threshold=0.3),
        retrain=RetrainSettings(targets=[RetrainTarget(name="trainer", url=hook.url)], secret="e2e-secret",
                                internal_policy=False, backoff_initial_seconds=0.2, backoff_max_seconds=0.5))
    rules = (ROOT / "alerts" / "driftline-rules.yml").read_text()
    (tmp_path / "rules.yml").write_text(re.sub(r"for: \d+m", "for: 2s", rules))
    am_port = free_port()
    (tmp_path / "am.yml").write_text(yaml.safe_dump({
        "route": {"receiver": "null", "group_by": ["alertname", "model", "version"], "group_wait": "1s",
                  "group_interval": "1s", "repeat_interval": "1h",
                  "routes": [{"receiver": "retrain", "matchers": ['driftline_action="retrain"']}]},
        "receivers": [{"name": "null"},
                      {"name": "retrain", "webhook_configs": [{"url": f"http://127.0.0.1:{port}/v1/alertmanager",
                                                               "send_resolved": False}]}],
    }))
    (tmp_path / "prom.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": "driftline", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
    }))
    am = AlertmanagerServer(tmp_path / "am", tmp_path / "am.yml", am_port, binaries=prometheus_binaries)
    prom = PrometheusServer(tmp_path / "prom", tmp_path / "prom.yml", binaries=prometheus_binaries)
    try:
        with running_service(settings) as url:
            feed(url, rng, "drifting", shift=1.5)
            feed(url, rng, "stable", shift=0.0)
            am.start()
            prom.start()
            prom.wait_for('driftline_dataset_drift{model="drifting"} == 1', timeout=60)
            deadline = time.monotonic() + 90
            while not hook.received and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(8)  # more rule evaluations and Alertmanager flushes: still one request
            firing = {(a["labels"]["alertname"], a["labels"].get("model")) for a in prom.alerts()
                      if a["state"] == "firing"}
            metrics = httpx.get(f"{url}/metrics").text
        assert ("DriftlineDatasetDrift", "drifting") in firing and ("DriftlineRetrainModel", "drifting") in firing
        assert not any(model == "stable" for _, model in firing)
        assert len(hook.received) == 1, hook.received
        assert hook.bad_signatures == 0 and hook.attempts == 3  # two 500s, then acknowledged
        req = hook.received[0]
        assert req["model"] == "drifting" and req["reason"] == "DriftlineRetrainModel"
        assert [f["name"] for f in req["drifted_features"]] == ["a"]
        assert 'driftline_retrain_requests_total{model="drifting",result="delivered",target="trainer"} 1.0' in metrics
        assert 'model="stable"' not in "".join(x for x in metrics.splitlines() if x.startswith("driftline_retrain"))
    finally:
        prom.stop()
        am.stop()
        hook.close()
