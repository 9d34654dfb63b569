"""End to end on real parts: service -> Prometheus (rules of alerts/) -> Alertmanager -> service -> retrainer.

The service runs under uvicorn on loopback and receives drifting traffic (envelopes built from numpy
window profiles, posted to /v1/ingest after a reference upload) for one model and stable traffic for
another. A real Prometheus scrapes it every second and evaluates a test copy of
``alerts/driftline-rules.yml`` in which every ``for:`` is shortened to 2 s (the only change; the
expressions, labels and annotations are the shipped ones). A real Alertmanager runs the routing of
``alerts/alertmanager.example.yml`` with 1 s group_wait / group_interval and a 2 s repeat_interval (so it
re-sends the same firing alert several times, a small storm), pointing the retraining receiver at the
service and the pager receivers at a local recorder. A local HTTP server stands in for the retraining
system: it checks every HMAC signature and answers 500 to the first two attempts.

Expected: exactly one retraining request for the drift episode, acknowledged on the third attempt;
none for the stable model; the dataset-drift page reaches the pager with its numbers, the retraining
alert does not. Every wait is bounded; the test takes well under a minute on an idle machine.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

from driftline.service.settings import EvaluationSettings, RetrainSettings, RetrainTarget, ServiceSettings
from tests.harness.ports import free_port
from tests.harness.prometheus import AlertmanagerServer, PrometheusServer
from tests.retrain_support import RetrainSink, WebhookRecorder
from tests.service_support import envelope, reference_bytes, running_service, window

ROOT = Path(__file__).resolve().parent.parent
FOR_IN_TEST = "2s"


def shortened_rules() -> str:
    """The shipped rules with every ``for:`` set to FOR_IN_TEST (and nothing else changed)."""
    text = (ROOT / "alerts" / "driftline-rules.yml").read_text()
    out, n = re.subn(r"(?m)^(\s+for:) \S+$", rf"\g<1> {FOR_IN_TEST}", text)
    assert n == text.count("- alert:"), "every rule should have a for: to shorten"
    return out


def alertmanager_config(service_url: str, pager_url: str) -> dict:
    """The example routing with short timings; the service and a local pager as receivers."""
    cfg = yaml.safe_load((ROOT / "alerts" / "alertmanager.example.yml").read_text())
    fast = {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "2s"}
    cfg["route"].update(fast)
    for route in cfg["route"]["routes"]:
        route.update({k: v for k, v in fast.items() if k in route})
    for receiver in cfg["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            retrain = hook["url"].endswith("/v1/alertmanager")
            hook["url"] = f"{service_url}/v1/alertmanager" if retrain else pager_url
    return cfg


def feed(url: str, rng: np.random.Generator, model: str, shift: float) -> None:
    now = time.time()
    with httpx.Client(base_url=url) as c:
        c.put(f"/v1/models/{model}/versions/v1/reference", content=reference_bytes(rng, model, "v1")).raise_for_status()
        for i in range(5):
            for dev in ("d1", "d2"):
                p = window(rng, model, "v1", device=dev, start=now - 300 + i * 60, shift=shift)
                c.post("/v1/ingest", content=envelope(p, device=dev)).raise_for_status()


def counter(metrics: str, model: str, result: str) -> float:
    m = re.search(rf'^driftline_retrain_requests_total{{model="{model}",result="{result}",target="trainer"}} (\S+)$',
                  metrics, flags=re.M)
    return float(m.group(1)) if m else 0.0


def test_drift_pages_and_retrains_exactly_once(tmp_path: Path, prometheus_binaries) -> None:
    rng = np.random.default_rng(0)
    sink = RetrainSink("e2e-secret", fail_first=2)
    pager = WebhookRecorder()
    port, am_port = free_port(), free_port()
    service_url = f"http://127.0.0.1:{port}"
    settings = ServiceSettings(
        database_url=f"sqlite:///{tmp_path / 'e2e.sqlite'}", port=port,
        evaluation=EvaluationSettings(current_window_seconds=3600, interval_seconds=0.5, drift_share_threshold=0.3),
        retrain=RetrainSettings(targets=[RetrainTarget(name="trainer", url=sink.url)], secret="e2e-secret",
                                internal_policy=False, backoff_initial_seconds=0.2, backoff_max_seconds=0.5))
    (tmp_path / "rules.yml").write_text(shortened_rules())
    (tmp_path / "am.yml").write_text(yaml.safe_dump(alertmanager_config(service_url, pager.url)))
    (tmp_path / "prom.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": "driftline", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
    }))
    am = AlertmanagerServer(tmp_path / "am", tmp_path / "am.yml", am_port, binaries=prometheus_binaries)
    prom = PrometheusServer(tmp_path / "prom", tmp_path / "prom.yml", binaries=prometheus_binaries)
    timings: dict[str, float] = {}
    try:
        with running_service(settings) as url:
            feed(url, rng, "drifting", shift=1.5)
            feed(url, rng, "stable", shift=0.0)
            am.start()
            prom.start()
            t0 = time.monotonic()
            prom.wait_for('driftline_dataset_drift{model="drifting"} == 1', timeout=60)
            timings["drift scraped"] = time.monotonic() - t0
            got = sink.wait_accepted(1, timeout=90)
            timings["retraining acknowledged"] = time.monotonic() - t0
            # Alertmanager keeps re-sending the firing alert (repeat_interval 2s): wait for two repeats
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                metrics = httpx.get(f"{url}/metrics").text
                if counter(metrics, "drifting", "deduplicated") >= 2:
                    break
                time.sleep(0.5)
            timings["repeats absorbed"] = time.monotonic() - t0
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(
                    a["labels"].get("alertname") == "DriftlineDatasetDrift" for a in pager.alerts()):
                time.sleep(0.5)
            firing = {(a["labels"]["alertname"], a["labels"].get("model")) for a in prom.alerts()
                      if a["state"] == "firing"}
            stable_alerts = [a["labels"]["alertname"] for a in prom.alerts() if a["labels"].get("model") == "stable"]
        print(f"\ne2e timings (s): {', '.join(f'{k} {v:.1f}' for k, v in timings.items())}")
        # Prometheus evaluated the shipped rules
        assert ("DriftlineDatasetDrift", "drifting") in firing and ("DriftlineRetrainModel", "drifting") in firing
        assert stable_alerts == []
        # exactly one retraining request, after two 500s, every attempt signed and carrying the same key
        assert len(got) == 1 and len(sink.accepted) == 1, sink.attempts
        assert [a.status for a in sink.attempts] == [500, 500, 200] and sink.bad_signatures == 0
        assert len({a.idempotency_key for a in sink.attempts}) == 1
        req = got[0]
        assert req["model"] == "drifting" and req["version"] == "v1" and req["reason"] == "DriftlineRetrainModel"
        assert req["trigger"]["source"] == "alertmanager" and req["trigger"]["fingerprint"]
        assert [f["name"] for f in req["drifted_features"]] == ["a"] and req["drifted_features"][0]["scores"]["ks"] > 0.1
        assert req["reference"]["source"] == "uploaded" and req["drift"]["drift_share"] >= 0.3
        assert counter(metrics, "drifting", "delivered") == 1 and counter(metrics, "drifting", "retried") == 2
        assert counter(metrics, "drifting", "deduplicated") >= 2
        assert 'model="stable"' not in "\n".join(x for x in metrics.splitlines() if x.startswith("driftline_retrain"))
        # the page went to on-call with its numbers; the retraining alert went only to the service
        pages = pager.alerts()
        drift_pages = [a for a in pages if a["labels"]["alertname"] == "DriftlineDatasetDrift"]
        assert drift_pages and all(a["labels"]["model"] == "drifting" for a in drift_pages)
        assert re.search(r"^\d+(\.\d+)?% of the features of drifting v1 .* Most drifted \(PSI\): a=\d",
                         drift_pages[0]["annotations"]["description"])
        assert not any(a["labels"].get("driftline_action") == "retrain" for a in pages)
        assert not any(a["labels"].get("model") == "stable" for a in pages)
    finally:
        prom.stop()
        am.stop()
        sink.close()
        pager.close()
