"""Golden-set conformance end to end over real loopback connections.

Two ``driftline sidecar`` processes sit in front of two real OIP v2 model servers; one server's
"driver" quantises an input. Both run a golden set built by ``driftline golden build`` and ship to
a real service, whose ``/metrics`` and status page must name the quantising device's cohort as
failing after its first golden run, and the golden cases must never be counted as live traffic.
Then the runner in process against a failing, silent and garbled model server: counted errors only.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from driftline.conformance import GoldenSet, Tolerances, read_golden_file
from driftline.edge_sidecar.golden import GoldenCollector, GoldenRunner, OipPredictor
from tests.harness.ports import free_port, wait_for_port
from tests.service_support import metric_samples, running_service
from tests.sidecar_support import _Handler, _Server, wait_until

REPO = Path(__file__).resolve().parents[1]
W = np.array([0.8, -0.5, 1.3, 0.2])
MODEL = "scorer"


def cloud(x: np.ndarray, quantise: bool = False) -> dict[str, np.ndarray]:
    """The model: a logistic score and a label; the bad driver rounds input 0 to steps of 0.5."""
    if quantise:
        x = x.copy()
        x[:, 0] = np.round(x[:, 0] * 2) / 2
    score = 1 / (1 + np.exp(-(x @ W)))
    return {"score": score, "label": (score > 0.5).astype(np.int64)}


class OipModel(_Server):
    """A real OIP v2 model server (standard library HTTP): infer with JSON tensors, model metadata."""

    def __init__(self, quantise: bool = False) -> None:
        self.infer_ids: list[str] = []
        self.versions = ["1"]
        server = self

        class Handler(_Handler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/v2/models/"):
                    self.reply(200, json.dumps({"name": MODEL, "versions": server.versions,
                                                "platform": "numpy"}).encode())
                else:
                    self.reply(404, b"{}")

            def do_POST(self) -> None:  # noqa: N802
                doc = json.loads(self.body())
                server.infer_ids.append(str(doc.get("id", "")))
                t = doc["inputs"][0]
                x = np.asarray(t["data"], dtype=np.float64).reshape(t["shape"])
                out = cloud(x, quantise)
                self.reply(200, json.dumps({"model_name": MODEL, "model_version": "1", "id": doc.get("id", ""),
                                            "outputs": [
                    {"name": "score", "shape": [len(x)], "datatype": "FP64", "data": out["score"].tolist()},
                    {"name": "label", "shape": [len(x)], "datatype": "INT64", "data": out["label"].tolist()},
                ]}).encode())

        super().__init__(Handler)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftline.apps.cli.main", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=_env())


def build_golden(tmp: Path, n: int = 80) -> Path:
    x = np.random.default_rng(0).normal(size=(n, 4))
    np.savez(tmp / "inputs.npz", x=x)
    np.savez(tmp / "outputs.npz", **cloud(x))
    out = cli("golden", "build", str(tmp / "inputs.npz"), str(tmp / "outputs.npz"), "--model", MODEL,
              "--version", "1", "--out", str(tmp / "golden.dlg"), "--atol", "1e-9", "--rtol", "1e-9")
    assert out.returncode == 0, out.stderr
    assert f"{n} cases of {MODEL} 1" in out.stdout
    return tmp / "golden.dlg"


def infer(port: int, x: np.ndarray) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP64",
                                   "data": x.ravel().tolist()}]})
    conn.request("POST", f"/v2/models/{MODEL}/versions/1/infer", body=body,
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 200


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def test_quantising_driver_is_caught_on_its_first_golden_run(tmp_path: Path) -> None:
    from driftline.service.settings import EvaluationSettings, ServiceSettings

    golden = build_golden(tmp_path)
    settings = ServiceSettings(host="127.0.0.1", port=0, database_url=f"sqlite:///{tmp_path / 'svc.sqlite'}",
                               evaluation=EvaluationSettings(interval_seconds=0.5))
    good, bad = OipModel().start(), OipModel(quantise=True).start()
    procs: list[subprocess.Popen[bytes]] = []
    ports: dict[str, tuple[int, int]] = {}
    try:
        with running_service(settings) as url:
            for device, server, driver in (("cam-good", good, "drv-1.4"), ("cam-bad", bad, "drv-2.0-q")):
                api, proxy = free_port(), free_port()
                ports[device] = (api, proxy)
                cfg = tmp_path / f"{device}.yaml"
                cfg.write_text(yaml.safe_dump({
                    "device": device, "cohort": {"driver": driver, "firmware": "fw-7"}, "model": MODEL,
                    "window": {"seconds": 1, "tick_seconds": 0.1},
                    "spool": {"path": str(tmp_path / device), "fsync": False},
                    "transport": {"http": {"url": url, "timeout_seconds": 5}},
                    "shipper": {"backoff_initial_seconds": 0.1, "backoff_max_seconds": 0.5, "shutdown_grace_seconds": 1},
                    "api": {"port": api},
                    "proxy": {"enabled": True, "port": proxy, "upstream": server.url, "model_version": "1"},
                    "golden": {"enabled": True, "paths": [str(golden)], "batch_size": 32, "check_seconds": 0.2},
                }))
                procs.append(subprocess.Popen([sys.executable, "-m", "driftline.apps.cli.main", "sidecar",
                                               "--config", str(cfg)], cwd=REPO, env=_env(),
                                              stdout=subprocess.DEVNULL,
                                              stderr=(tmp_path / f"{device}.log").open("ab")))
            for device, (api, proxy) in ports.items():
                assert wait_for_port(api, 30) and wait_for_port(proxy, 30), (tmp_path / f"{device}.log").read_text()
            rng = np.random.default_rng(1)
            sent = dict.fromkeys(ports, 0)

            def conformance_seen() -> bool:
                for device, (_api, proxy) in ports.items():  # live traffic, so windows (with results) ship
                    x = rng.normal(size=(5, 4))
                    infer(proxy, x)
                    sent[device] += 5
                devices = metric_samples(get(f"{url}/metrics"), "driftline_edge_conformance_devices")
                return devices.get((("model", MODEL), ("result", "fail"), ("version", "1")), 0) == 1 and \
                    devices.get((("model", MODEL), ("result", "pass"), ("version", "1")), 0) == 1

            assert wait_until(conformance_seen, 60), get(f"{url}/metrics")
            text = get(f"{url}/metrics")
            cohort = metric_samples(text, "driftline_edge_conformance_cohort_devices")
            assert cohort[(("cohort_label", "driver"), ("cohort_value", "drv-2.0-q"), ("model", MODEL),
                           ("result", "fail"), ("version", "1"))] == 1
            assert cohort[(("cohort_label", "driver"), ("cohort_value", "drv-1.4"), ("model", MODEL),
                           ("result", "pass"), ("version", "1"))] == 1
            assert cohort[(("cohort_label", "firmware"), ("cohort_value", "fw-7"), ("model", MODEL),
                           ("result", "fail"), ("version", "1"))] == 1
            # the worst difference is the quantised device's, computed here independently
            x = np.load(tmp_path / "inputs.npz")["x"]
            q, c = cloud(x, quantise=True), cloud(x)
            want = max(float(np.abs(q[k] - c[k]).max()) for k in ("score", "label"))  # labels are numbers too
            got = metric_samples(text, "driftline_edge_conformance_max_abs_diff")[(("model", MODEL), ("version", "1"))]
            assert got == pytest.approx(want, rel=1e-9) and want > 0
            top1 = metric_samples(text, "driftline_edge_conformance_top1_agreement_ratio")[(("model", MODEL), ("version", "1"))]
            assert top1 == float(np.mean(q["label"] == c["label"])) < 1.0
            page = get(f"{url}/models/{MODEL}?version=1")
            assert "Golden-set conformance" in page and "MISMATCH" in page and "cam-bad" in page
            assert "driver=drv-2.0-q" in page
            for device, (api, _proxy) in ports.items():
                health = json.loads(get(f"http://127.0.0.1:{api}/healthz"))
                assert health["golden"]["runs"].get("pass" if device == "cam-good" else "fail", 0) >= 1
                assert health["golden"]["results"][0]["trigger"] == "start"  # caught on the first run
                # golden cases never count as live rows: only what went through the proxy does
                # (the proxy folds what it captured on its own thread: wait for the last requests to land)
                def observed(api: int = api) -> float:
                    return sum(metric_samples(get(f"http://127.0.0.1:{api}/metrics"),
                                       "driftline_sidecar_observations_total").values())

                wait_until(lambda device=device: observed() >= sent[device], 20)
                assert observed() == sent[device]
            # the golden runs went to the model servers directly, tagged with the set's digest
            digest = read_golden_file(golden).digest
            assert f"golden-{digest}" in good.infer_ids and f"golden-{digest}" in bad.infer_ids
            # a version change on the model server runs the set again
            bad.versions = ["1", "2"]
            api = ports["cam-bad"][0]
            assert wait_until(lambda: json.loads(get(f"http://127.0.0.1:{api}/healthz"))["golden"]["results"][0]
                              ["trigger"] == "version_change", 20)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                assert p.wait(30) == 0
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        good.stop()
        bad.stop()


# ---- the runner against model servers that misbehave -------------------------------------------------
class Misbehaving(_Server):
    """Answers every request with ``status`` and ``body``."""

    def __init__(self, status: int, body: bytes) -> None:
        class Handler(_Handler):
            def do_POST(self) -> None:  # noqa: N802
                self.body()
                self.reply(status, body)

            do_GET = do_POST  # noqa: N815

        super().__init__(Handler)


def small_golden() -> GoldenSet:
    x = np.random.default_rng(2).normal(size=(10, 4))
    return GoldenSet(MODEL, "1", {"x": x}, cloud(x), Tolerances(atol=1e-9, rtol=1e-9))


@pytest.mark.parametrize("kind", ["closed", "500", "garbage", "no_outputs", "silent"])
def test_a_failing_or_hanging_model_server_is_a_counted_error(kind: str) -> None:
    g = small_golden()
    server: Any = None
    silent: socket.socket | None = None
    if kind == "closed":
        port = free_port()
    elif kind == "silent":  # accepts and never answers
        silent = socket.create_server(("127.0.0.1", 0))
        port = silent.getsockname()[1]
    else:
        status, body = {"500": (500, b'{"error": "boom"}'), "garbage": (200, b"not json"),
                        "no_outputs": (200, b'{"outputs": [{"name": "score"}]}')}[kind]
        server = Misbehaving(status, body).start()
        port = server.port
    try:
        runner = GoldenRunner([g], OipPredictor(f"http://127.0.0.1:{port}", timeout=0.5))
        entry = runner.run_one(g, "manual")
        reason = {"closed": "unreachable", "silent": "unreachable", "500": "http_status", "garbage": "bad_response",
                  "no_outputs": "bad_response"}[kind]
        assert entry["passed"] is False and entry["error"]
        assert runner.errors == {reason: 1} and runner.runs == {"error": 1}
        fams = {f.name: f for f in GoldenCollector(runner).collect()}
        errs = {s.labels["reason"]: s.value for s in fams["driftline_sidecar_conformance_errors"].samples
                if s.name.endswith("_total")}
        assert errs[reason] == 1 and sum(errs.values()) == 1
        assert [s.value for s in fams["driftline_sidecar_conformance_passed"].samples] == [0.0]
    finally:
        if server is not None:
            server.stop()
        if silent is not None:
            silent.close()


def test_sdk_callback_failures_and_version_changes_on_the_schedule() -> None:
    g = small_golden()
    calls = {"n": 0}
    versions = iter(["a", "a", "b"])
    lock = threading.Lock()

    def predict(golden: GoldenSet, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with lock:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("driver crashed")
        return cloud(inputs["x"])

    def served(model: str) -> str:
        return next(versions, "b")

    runner = GoldenRunner([g], predict, interval=3600, check_seconds=0.05, served_version=served).start()
    try:
        assert wait_until(lambda: runner.triggers.get("version_change", 0) == 1, 10)
    finally:
        runner.stop()
    assert runner.errors == {"callback": 1}  # the first (start) run: the callback raised, counted
    assert runner.runs == {"error": 1, "pass": 1}
    (entry,) = runner.entries()
    assert entry["trigger"] == "version_change" and entry["passed"] is True and "error" not in entry
