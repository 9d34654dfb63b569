"""Argo Rollouts' and Flagger's own Go code against the live service, with real SDK monitors shipping data.

``tests/controllers`` (its own go.mod) builds Argo Rollouts' analysis controller and web metric
provider and Flagger's webhook caller from their Go modules. Each run reads the repository's example
manifest, points it at this service through a proxy that asks the feeder below for one more window
per arm before each controller call, and prints the outcome: the final phase, and every measurement
or hook call. A harmless canary must end Successful and promoted, a harmful one Failed and rolled
back, each after as many intervals as the service's own experiment history shows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import numpy as np
import pytest

from driftline.edge_sidecar.monitor import Monitor
from driftline.profile import ProfileConfig
from driftline.service.settings import CanarySettings, EvaluationSettings, ServiceSettings
from tests.harness.gobuilds import wait_for_go_builds
from tests.service_support import running_service

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "controllers"
ROWS = 400  # per arm and interval
WINDOW = 60.0  # data time per interval
START = 1_900_000_000.0  # data time of the first window (after every experiment's start)


def go_env(tmp: Path) -> dict[str, str]:
    """The Go caches under ~/.cache/driftline unless the caller set GOMODCACHE/GOCACHE; never required."""
    env = dict(os.environ)
    cache = Path(os.environ.get("DRIFTLINE_CACHE", Path.home() / ".cache" / "driftline")) / "go"
    env.setdefault("GOMODCACHE", str(cache / "mod"))
    env.setdefault("GOCACHE", str(cache / "build"))
    env["GOTOOLCHAIN"] = "local"
    return env


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wait_for_go_builds()
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        pytest.fail("the Go toolchain is needed to build tests/controllers (Argo Rollouts and Flagger)")
    out = tmp_path_factory.mktemp("controllers") / "controllers"
    proc = subprocess.run([go, "build", "-o", str(out), "."], cwd=HARNESS, env=go_env(out.parent),
                          capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


class Feeder:
    """One SDK Monitor per model shipping over HTTP; each POST /feed closes one window per arm and waits
    until the service has stored both."""

    def __init__(self, service: str, spool: Path, harmful: dict[str, bool]) -> None:
        self.service = service
        self.harmful = harmful
        self.rng = {m: np.random.default_rng(11 + i) for i, m in enumerate(sorted(harmful))}
        self.clock = {m: START for m in harmful}
        self.feeds = {m: 0 for m in harmful}
        self.monitors = {m: Monitor.configure(model=m, device=f"edge-{m}", window_seconds=WINDOW, lateness_seconds=0,
                                              background=False, clock=lambda m=m: self.clock[m], service_url=service,
                                              spool_dir=str(spool / m),
                                              profile=ProfileConfig(categorical=frozenset({"label"}))).start()
                         for m in harmful}
        self.lock = threading.Lock()
        feeder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                model = parse_qs(urlparse(self.path).query).get("model", [""])[0]
                ok = model in feeder.monitors and feeder.feed(model)
                self.send_response(200 if ok else 500)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def feed(self, model: str) -> bool:
        with self.lock:
            mon, rng, bad = self.monitors[model], self.rng[model], self.harmful[model]
            self.clock[model] = START + self.feeds[model] * WINDOW + 1
            for version, variant in (("v1", "baseline"), ("v2", "canary")):
                harm = bad and version == "v2"
                score = np.clip(rng.beta(5, 2, ROWS) + (-0.08 if harm else 0.0), 0, 1)  # a modest regression
                mon.observe({"a": rng.normal(0, 1, ROWS), "b": rng.exponential(1, ROWS)},
                            {"score": score, "label": (score > 0.5).astype(int)}, model_version=version,
                            variant=variant, latency_ms=rng.gamma(4, 3.0 / 4, ROWS))
            self.feeds[model] += 1
            self.clock[model] = START + self.feeds[model] * WINDOW + 0.5
            mon.tick()  # closes the window; the monitor's own shipper posts it to the service
            want = self.feeds[model] * ROWS
            for _ in range(200):  # bounded: 20 s
                streams = {s["version"]: s["rows"] for m in httpx.get(f"{self.service}/v1/models").json()["models"]
                           if m["name"] == model for s in m["streams"]}
                if streams.get("v1") == want and streams.get("v2") == want:
                    return True
                threading.Event().wait(0.1)
            return False

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        for m in self.monitors.values():
            m.close()


MODELS = {"argo-good": False, "argo-bad": True, "flagger-good": False, "flagger-bad": True}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("live")
    # Flagger's example reaches maxWeight in 5 intervals; min_rows 8000 (20 windows) makes it wait there for promote
    canaries = [CanarySettings(baseline_version="v1", canary_version="v2", min_duration_seconds=240, model=m,
                               min_rows=8000 if m.startswith("flagger") else 2000) for m in MODELS]
    s = ServiceSettings(database_url=f"sqlite:///{tmp / 's.sqlite'}", port=0, canaries=canaries,
                        evaluation=EvaluationSettings(current_window_seconds=3600, interval_seconds=3600))
    with running_service(s) as url:
        feeder = Feeder(url, tmp / "spool", MODELS)
        try:
            yield url, feeder
        finally:
            feeder.close()


def run(harness: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run([str(harness), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def experiment(url: str, model: str) -> dict[str, Any]:
    exps = httpx.get(f"{url}/v1/models/{model}/canary/experiments").json()
    assert len(exps) == 1, exps  # the controller's first call started exactly one experiment
    return exps[0]


@pytest.mark.parametrize("model", ["argo-good", "argo-bad"])
def test_argo_rollouts_analysis_controller_decides_each_rollout(harness: Path, live: Any, model: str) -> None:
    url, feeder = live
    out = run(harness, "argo", "-file", str(ROOT / "helm/examples/argo-rollouts/analysis-template.yaml"),
              "-service", url, "-feeder", feeder.url, "-model", model, "-interval", "1s",
              "-arg", f"model={model}", "-arg", "rollout=6d8f7c9b5", "-arg", "canary-version=v2")
    exp = experiment(url, model)
    phases = [m["phase"] for m in out["measurements"]]
    history = [h["verdict"] for h in exp["history"]]
    # one measurement per interval, each one gate call the service recorded, in the same order
    assert len(phases) == len(history) == out["calls"] == feeder.feeds[model]
    assert exp["rollout"] == "argo:6d8f7c9b5" and exp["controller"] == "argo"
    if MODELS[model]:
        assert out["phase"] == "Failed" and out["aborted"] and not out["promoted"], out
        assert history[-1] == "rollback" and set(history[:-1]) <= {"continue"}
        assert phases[-1] == "Failed" and set(phases[:-1]) <= {"Inconclusive"}
        assert exp["status"] == "rolled_back"
        assert 2 <= len(phases) <= 20, phases  # decided as soon as the always-valid interval clears the tolerance
    else:
        assert out["phase"] == "Successful" and out["promoted"], out
        # "continue" never counted as success: every measurement before the last was Inconclusive
        assert phases[-1] == "Successful" and set(phases[:-1]) == {"Inconclusive"}
        assert history[-1] == "promote" and set(history[:-1]) == {"continue"}
        assert exp["status"] == "promoted"
        # no decision before min_duration_seconds=240 s of data (4 windows of 60 s) and min_rows=2000 (5 x 400)
        assert len(phases) >= 5, phases
        assert len(phases) <= 30, phases


@pytest.mark.parametrize("model", ["flagger-good", "flagger-bad"])
def test_flagger_webhooks_decide_each_rollout(harness: Path, live: Any, model: str) -> None:
    url, feeder = live
    out = run(harness, "flagger", "-file", str(ROOT / "helm/examples/flagger/canary.yaml"),
              "-service", url, "-feeder", feeder.url, "-model", model, "-interval", "200ms", "-checksum", "rev-7")
    # the example's URLs name model "fraud": the harness points them at this scenario's model
    exp = experiment(url, model)
    hooks = out["hooks"]
    assert len(hooks) == out["calls"] == len(exp["history"]) == feeder.feeds[model]
    assert exp["rollout"].startswith("flagger:models/fraud-model@") and exp["controller"] == "flagger"
    # Flagger's order in each interval: the rollback hook first, then pre-rollout (before any traffic) or rollout
    assert [h["type"] for h in hooks[:2]] == ["rollback", "pre-rollout"] and hooks[1]["ok"] and not hooks[0]["ok"]
    if MODELS[model]:
        assert out["phase"] == "Failed" and out["rolled_back"] and not out["promoted"], out
        assert hooks[-1] == {**hooks[-1], "type": "rollback", "ok": True}  # the rollback hook fired
        assert not any(h["ok"] for h in hooks if h["type"] == "confirm-promotion")
        assert exp["status"] == "rolled_back"
    else:
        assert out["phase"] == "Succeeded" and out["promoted"] and out["failed_checks"] == 0, out
        promos = [h for h in hooks if h["type"] == "confirm-promotion"]
        # promoted only on "promote": Flagger waited at maxWeight (WaitingPromotion) until then
        assert len(promos) >= 2 and promos[-1]["ok"] and not any(h["ok"] for h in promos[:-1]), promos
        # ... in the first interval the service said promote: hooks and recorded calls pair up one to one
        decided = promos[-1]["interval"]
        paired = zip(hooks, exp["history"], strict=True)
        assert all(e["verdict"] == "continue" for h, e in paired if h["interval"] < decided)
        assert exp["history"][-1]["verdict"] == "promote"
        assert not any(h["ok"] for h in hooks if h["type"] == "rollback")
        assert exp["status"] == "promoted"
        # weights 10..50 take 5 intervals, then waiting, promoting, finalising
        assert 8 <= out["intervals"] <= 30, out
