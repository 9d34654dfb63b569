"""Shadow mirroring end to end: a real sidecar process proxies a real OIP v2 model server and mirrors
each call to a real shadow server; the paired summaries it ships decide "ready" or "worse", and a
shadow that hangs, fails or refuses connections changes nothing the caller gets."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from driftline.edge_sidecar.runner import Sidecar
from driftline.edge_sidecar.settings import load_settings
from driftline.pairing import PairedSummary
from driftline.stats.shadow import ShadowConfig, evaluate_shadow
from tests.harness.ports import free_port, wait_for_port
from tests.sidecar_support import EnvelopeReceiver, ModelServer, _Handler, _infer_rows, _Server, wait_until

REPO = Path(__file__).resolve().parents[1]
CFG = ShadowConfig(min_pairs=300, t_star=200.0, error_tolerance=0.05)


class ShadowServer(_Server):
    """The live model's twin, steered by the model name: ``same`` answers as the live one does,
    ``flip`` flips every label, ``fail`` answers 500, ``hang`` sleeps 30 s (until stopped)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.release = threading.Event()
        server = self

        class Handler(_Handler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.body()
                model = self.path.split("/")[3]
                server.calls[model] = server.calls.get(model, 0) + 1
                if model == "hang":
                    server.release.wait(30)
                    try:
                        self.reply(200, b"{}")
                    except OSError:  # the mirror gave up long ago and closed: that is the point
                        pass
                    return
                if model == "huge":
                    self.reply(200, b"[" + b"0," * 600_000 + b"0]")
                    return
                if model == "fail":
                    self.reply(500, b'{"error": "shadow broke"}')
                    return
                doc, rows = _infer_rows(body, self.headers.get("Inference-Header-Content-Length"))
                scores = rows.sum(axis=1)
                labels = ["pos" if s > 0 else "neg" for s in scores]
                if model == "flip":
                    labels = ["neg" if v == "pos" else "pos" for v in labels]
                out = {"model_name": model, "model_version": "2", "id": doc.get("id", ""), "outputs": [
                    {"name": "score", "shape": [len(scores)], "datatype": "FP64", "data": scores.tolist()},
                    {"name": "label", "shape": [len(labels)], "datatype": "BYTES", "data": labels}]}
                self.reply(200, json.dumps(out).encode())

        super().__init__(Handler)

    def stop(self) -> None:
        self.release.set()
        super().stop()


def infer_body(rng: np.random.Generator, rid: str) -> bytes:
    x = rng.normal(size=(8, 3))
    return json.dumps({"id": rid, "inputs": [{"name": "x", "shape": [8, 3], "datatype": "FP64",
                                               "data": x.ravel().tolist()}]}).encode()


def post(conn: http.client.HTTPConnection, model: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    conn.request("POST", f"/v2/models/{model}/infer", body=body,
                 headers={"Content-Type": "application/json", "X-Request-Id": "r"})
    r = conn.getresponse()
    data = r.read()
    return r.status, sorted((k, v) for k, v in r.getheaders() if k.lower() != "date"), data


def run_calls(proxy_port: int, live_port: int, model: str, n: int, seed: int) -> list[int]:
    """``n`` calls through the proxy and the same ones straight to the live server: answers must be equal."""
    rng = np.random.default_rng(seed)
    via, direct = (http.client.HTTPConnection("127.0.0.1", p, timeout=10) for p in (proxy_port, live_port))
    statuses = []
    try:
        for i in range(n):
            body = infer_body(rng, f"{model}-{i}")
            got = post(via, model, body)
            assert got == post(direct, model, body), f"call {i} of {model} differs from the live server's answer"
            statuses.append(got[0])
    finally:
        via.close()
        direct.close()
    return statuses


def health(port: int) -> dict[str, Any]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/healthz")
    out = json.loads(c.getresponse().read())
    c.close()
    return out


def metric(port: int, name: str) -> float:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def summaries(rx: EnvelopeReceiver) -> dict[str, PairedSummary]:
    out: dict[str, PairedSummary] = {}
    for p in rx.profiles():
        if p.key.variant == "shadow" and p.shadow is not None:
            out.setdefault(p.key.model, PairedSummary()).merge(PairedSummary.from_dict(p.shadow))
    return out


@pytest.fixture
def servers() -> Iterator[tuple[ModelServer, ShadowServer, EnvelopeReceiver]]:
    with ModelServer() as live, ShadowServer() as shadow, EnvelopeReceiver() as rx:
        yield live, shadow, rx


def test_sidecar_process_pairs_live_and_shadow_and_a_broken_shadow_changes_nothing(
        tmp_path: Path, servers: tuple[ModelServer, ShadowServer, EnvelopeReceiver]) -> None:
    live, shadow, rx = servers
    api, proxy = free_port(), free_port()
    config = tmp_path / "sidecar.yaml"
    config.write_text(yaml.safe_dump({
        "device": "dev-shadow", "window": {"seconds": 1, "lateness_seconds": 0, "tick_seconds": 0.05},
        "spool": {"path": str(tmp_path / "spool"), "fsync": False},
        "transport": {"http": {"url": rx.url, "timeout_seconds": 5}},
        "shipper": {"backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2, "shutdown_grace_seconds": 10},
        "api": {"port": api},
        "proxy": {"enabled": True, "port": proxy, "upstream": live.url, "model_version": "1",
                  "shadow": {"enabled": True, "upstream": shadow.url, "timeout_seconds": 0.3, "queue": 64}},
    }))
    log = tmp_path / "sidecar.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    proc = subprocess.Popen([sys.executable, "-m", "driftline.apps.cli.main", "sidecar", "--config", str(config)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"))
    try:
        assert wait_for_port(proxy, 30) and wait_for_port(api, 30), log.read_text()
        for model, seed in (("same", 1), ("flip", 2)):
            assert run_calls(proxy, live.port, model, 360, seed) == [200] * 360
            assert wait_until(lambda: health(api)["shadow"]["queued"] == 0), health(api)
        for model, seed in (("fail", 3), ("hang", 4)):
            assert run_calls(proxy, live.port, model, 120, seed) == [200] * 120  # no caller call failed
        # the hanging shadow holds the worker for its timeout per mirror: the bounded queue overflowed
        assert wait_until(lambda: metric(api, "driftline_sidecar_shadow_mirrors_dropped_total") > 0)
        dropped = metric(api, "driftline_sidecar_shadow_mirrors_dropped_total")
        assert metric(api, 'driftline_sidecar_shadow_mirrors_total{result="error"}') >= 120
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log.read_text()
    assert shadow.calls["same"] == shadow.calls["flip"] == 360  # every mirror of these reached the shadow
    got = summaries(rx)
    same, flip, fail, hang = (got[m] for m in ("same", "flip", "fail", "hang"))
    assert (same.requests, same.rows, same.labelled, same.agree, same.score_n) == (360, 2880, 2880, 2880, 2880)
    assert same.score_mean == 0.0 and same.score_m2 == 0.0 and same.shadow_errors == same.live_errors == 0
    assert (flip.requests, flip.agree, flip.labelled) == (360, 0, 2880)
    assert evaluate_shadow(same, CFG).verdict == "ready"
    assert evaluate_shadow(flip, CFG).verdict == "worse"
    assert (fail.requests, fail.shadow_only_errors, fail.live_errors, fail.rows) == (120, 120, 0, 0)
    assert evaluate_shadow(fail, CFG).verdict == "worse"
    assert hang.shadow_only_errors == hang.requests > 0
    # every mirror was either compared or dropped and counted (at the full queue, or still queued at shutdown)
    assert hang.requests + hang.dropped == 120 and hang.dropped >= dropped
    # the shadow's outputs were recorded as their own stream, variant "shadow", the shadow's version
    shadow_rows = sum(p.rows for p in rx.profiles() if p.key.model == "same" and p.key.variant == "shadow")
    assert shadow_rows == 2880
    assert {p.key.model_version for p in rx.profiles() if p.key.model == "same" and p.key.variant == "shadow"} == {"2"}


@pytest.mark.parametrize("shadow_kind", ["refused", "huge"])
def test_a_shadow_that_refuses_connections_or_floods_changes_nothing_for_the_caller(tmp_path: Path,
                                                                                     shadow_kind: str) -> None:
    with ModelServer() as live, EnvelopeReceiver() as rx, ShadowServer() as flood:
        model = "m" if shadow_kind == "refused" else "huge"  # huge: a 1.2 MB answer, over max_capture_bytes
        upstream = f"http://127.0.0.1:{free_port()}" if shadow_kind == "refused" else flood.url
        s = load_settings(None, device="dev-r", window={"seconds": 1, "lateness_seconds": 0, "tick_seconds": 0.05},
                          spool={"path": str(tmp_path / "spool"), "fsync": False},
                          transport={"http": {"url": rx.url, "timeout_seconds": 5}}, api={"port": 0},
                          shipper={"shutdown_grace_seconds": 10},
                          proxy={"enabled": True, "port": 0, "upstream": live.url, "max_capture_bytes": 1_000_000,
                                 "shadow": {"enabled": True, "upstream": upstream}})
        sc = Sidecar(s).start()
        try:
            assert sc.proxy is not None and sc.shadow is not None
            assert run_calls(sc.proxy.port, live.port, model, 60, 5) == [200] * 60
            assert wait_until(lambda: sc.shadow is not None and sc.shadow.results["error"] == 60)
        finally:
            sc.stop()
        m = summaries(rx)[model]
        assert (m.requests, m.shadow_only_errors, m.live_errors, m.rows) == (60, 60, 0, 0)
        assert sum(p.runtime.errors for p in rx.profiles() if p.key.variant == "shadow" and p.runtime) == 60


def test_shadow_settings_refuse_a_missing_upstream() -> None:
    from driftline.edge_sidecar.errors import SettingsError

    with pytest.raises(SettingsError, match="proxy.shadow.upstream"):
        load_settings(None, proxy={"enabled": True, "shadow": {"enabled": True}})


def test_a_mirror_pairs_alike_with_or_without_the_rows_the_capture_decoded() -> None:
    from driftline.edge_sidecar.httppost import Answer
    from driftline.edge_sidecar.monitor import Monitor
    from driftline.edge_sidecar.monitorconfig import MonitorConfig
    from driftline.edge_sidecar.oip import Exchange, parse_exchange
    from driftline.edge_sidecar.shadow import Mirror, ShadowMirror

    body = infer_body(np.random.default_rng(6), "r-6")
    live = json.dumps({"model_version": "1", "outputs": [
        {"name": "score", "shape": [8], "datatype": "FP64", "data": [0.1 * i for i in range(8)]},
        {"name": "label", "shape": [8], "datatype": "BYTES", "data": ["pos", "neg"] * 4}]}).encode()
    shadow = json.dumps({"model_version": "2", "outputs": [
        {"name": "score", "shape": [8], "datatype": "FP64", "data": [0.2 * i for i in range(8)]},
        {"name": "label", "shape": [8], "datatype": "BYTES", "data": ["pos"] * 8}]}).encode()
    rows = parse_exchange(Exchange("m", None, body, None, live, None, "hdr-id"))
    got = []
    for live_rows in (None, rows):
        monitor = Monitor(MonitorConfig())
        sm = ShadowMirror(monitor, "http://127.0.0.1:9")
        sm._poster.post = lambda path, headers, b: Answer(200, {}, shadow)  # type: ignore[method-assign]
        sm._mirror(Mirror("m", "/v2/models/m/infer", None, {"x-request-id": "hdr-id"}, body, 200, live, "hdr-id",
                          live_rows))
        monitor.tick()
        s = sm.pending("m")
        assert s is not None
        got.append((s.to_dict(), monitor.snapshot()["observed"]))
    assert got[0] == got[1]
    assert got[0][0]["rows"] == got[0][0]["labelled"] == 8 and got[0][0]["agree"] == 4
    assert sum(got[0][1].values()) == 8  # the shadow's rows were recorded either way


def test_the_worker_leaves_busy_moments_to_serving_but_never_waits_past_its_bound(monkeypatch) -> None:
    """While the proxy serves a request the worker holds off each step; a proxy that is never idle
    delays a mirror by at most the bound per step, and the mirror is still done. A fake clock (each
    poll's sleep advances it) makes the bounds exact instead of a wall-clock race."""
    import types

    from driftline.edge_sidecar import shadow as shadow_mod
    from driftline.edge_sidecar.httppost import Answer
    from driftline.edge_sidecar.monitor import Monitor
    from driftline.edge_sidecar.monitorconfig import MonitorConfig
    from driftline.edge_sidecar.shadow import Mirror, ShadowMirror

    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    monkeypatch.setattr(shadow_mod, "time", types.SimpleNamespace(perf_counter=lambda: now[0], sleep=sleep))
    body = infer_body(np.random.default_rng(7), "r-7")
    answer = json.dumps({"outputs": [{"name": "score", "shape": [8], "datatype": "FP64",
                                      "data": [0.1 * i for i in range(8)]}]}).encode()
    posted_at: list[float] = []

    def post(path: str, headers: dict[str, str], b: bytes) -> Answer:
        posted_at.append(now[0])
        return Answer(200, {}, answer)

    bound, poll = shadow_mod.SERVING_FIRST_MAX_S, shadow_mod.SERVING_FIRST_POLL_S
    # (busy for, least and most waited): idle; busy 1.5 ms (the first step waits it out, to a poll);
    # never idle (each of the two steps waits its whole bound, to a poll)
    for busy_for, expect_min, expect_max in ((0.0, 0.0, 0.0), (0.0015, 0.0015, 0.0015 + poll),
                                            (60.0, 2 * bound, 2 * (bound + poll))):
        now[0] = 0.0
        monitor = Monitor(MonitorConfig())
        sm = ShadowMirror(monitor, "http://127.0.0.1:9", busy=lambda busy_for=busy_for: now[0] < busy_for)
        sm._poster.post = post  # type: ignore[method-assign]
        sm._mirror(Mirror("m", "/v2/models/m/infer", None, {}, body, 200, answer, "r-7"))
        monitor.tick()
        assert expect_min - 1e-9 <= sm.waited_seconds <= expect_max + 1e-9, (busy_for, sm.waited_seconds)
        assert posted_at[-1] >= min(busy_for, bound) - 1e-9  # posted only after the wait
        assert sm.results == {"ok": 1, "error": 0} and sum(monitor.snapshot()["observed"].values()) == 8
