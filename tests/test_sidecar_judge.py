"""The device judges itself: references pushed with ETags, verdicts on the device, on the wire and in the service.

Real parts throughout: the service under uvicorn on loopback with its SQLite database, the sidecar
with its HTTP transport, spool, local API and a local HTTP receiver for the drift action.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from driftline.edge_sidecar.judge import ActionRunner, Judge, JudgeCollector, ReferenceSource
from driftline.edge_sidecar.runner import Sidecar
from driftline.edge_sidecar.settings import JudgeSettings, load_settings
from driftline.errors import WireFormatError
from driftline.profile import StreamKey, WindowProfile
from driftline.service.app import create_app
from driftline.service.settings import EvaluationSettings, ServiceSettings
from driftline.stats import DriftConfig
from driftline.wire import Envelope, decode_envelope, encode_envelope
from tests.harness.ports import free_port
from tests.service_support import serving
from tests.sidecar_support import wait_until

FEATURES = ("a", "b", "c")


def rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[dict[str, Any], dict[str, Any]]:
    feats = {"a": rng.normal(shift, 1, n), "b": rng.exponential(1 + shift, n), "c": rng.uniform(shift, 1 + shift, n)}
    return feats, {"score": np.clip(rng.beta(5, 2, n) + shift / 4, 0, 1)}


def reference(rng: np.random.Generator, model: str = "m", version: str = "1", n: int = 5000) -> WindowProfile:
    p = WindowProfile(StreamKey.of(model, version, "reference", "training"), 0.0, 1.0)
    p.update(*rows(rng, n))
    return p


def ref_bytes(p: WindowProfile) -> bytes:
    return encode_envelope(Envelope([p], producer={"name": "test"}))


def svc_settings(db: Path, **kw: Any) -> ServiceSettings:
    return ServiceSettings(database_url=f"sqlite:///{db}", port=kw.pop("port", 0),
                           evaluation=EvaluationSettings(current_window_seconds=3600, interval_seconds=3600), **kw)


class ActionReceiver:
    """A local HTTP endpoint that records the JSON the drift action posts."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:  # noqa: N802
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> ActionReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """GET over urllib (what the sidecar itself uses); the headers are case-insensitive."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


# ---- the wire ------------------------------------------------------------------------------------

def test_a_verdict_rides_the_wire_optionally_and_is_bounded() -> None:
    rng = np.random.default_rng(1)
    p = WindowProfile(StreamKey.of("m", "1", source="d1"), 10.0, 20.0)
    p.update(*rows(rng, 100))
    plain = decode_envelope(encode_envelope(Envelope([p]))).profiles[0]
    assert plain.verdict is None and "verdict" not in plain.to_dict()  # absent unless set
    p.verdict = {"dataset_drift": True, "drift_share": 0.75, "status": "drift", "drifted": ["a", "b"],
                 "evaluated_at": 21.0, "reference": '"abc"'}
    back = decode_envelope(encode_envelope(Envelope([p]))).profiles[0]
    assert back.verdict == p.verdict
    # a decoder that knows nothing of verdicts reads the same profile (from_dict takes only the keys it knows)
    d = p.to_dict()
    d["verdict"]["from_the_future"] = 1
    assert WindowProfile.from_dict(d).verdict == p.verdict
    assert WindowProfile.from_dict({k: v for k, v in d.items() if k != "verdict"}).rows == p.rows
    # merging keeps the newest verdict
    q = p.copy()
    q.verdict = {**p.verdict, "evaluated_at": 5.0, "dataset_drift": False}
    assert q.copy().merge_into(p).verdict == p.verdict and p.copy().merge_into(q).verdict == p.verdict
    for bad, why in (({"drift_share": 1.5}, "outside"), ({"dataset_drift": 1}, "boolean"),
                     ({"drifted": [f"f{i}" for i in range(17)]}, "17 entries"), ({"status": "maybe"}, "status"),
                     ({"reference": "x" * 129}, "129 characters"), ({"evaluated_at": math.inf}, "not finite")):
        p.verdict = {**back.verdict, **bad}
        with pytest.raises(WireFormatError, match=why):
            decode_envelope(encode_envelope(Envelope([p])))


# ---- the reference endpoint and the reference source -------------------------------------------

def test_the_service_serves_references_with_etags_to_devices_and_readers(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    ref = reference(rng)
    s = svc_settings(tmp_path / "s.sqlite", api_token=SecretStr("w"), read_token=SecretStr("r"),
                     device_tokens={"d1": SecretStr("dev")})
    with serving(create_app(s), s) as url:
        path = f"{url}/v1/models/m/versions/1/reference"
        assert get(path, {"Authorization": "Bearer r"})[0] == 404
        r = httpx.put(path, content=ref_bytes(ref), headers={"Authorization": "Bearer w"})
        assert r.status_code == 200
        assert get(path)[0] == 401 and get(path, {"Authorization": "Bearer nope"})[0] == 401
        bodies = {}
        for token in ("r", "w", "dev"):
            status, headers, body = get(path, {"Authorization": f"Bearer {token}"})
            assert status == 200 and headers["ETag"].startswith('"')
            bodies[token] = (headers["ETag"], body)
        assert len(set(bodies.values())) == 1  # the same bytes and ETag whoever asks
        etag, body = bodies["dev"]
        got = decode_envelope(body, instant_ok=True).profiles[0]
        assert got.rows == ref.rows and sorted(got.features) == list(FEATURES)
        status, headers, body = get(path, {"Authorization": "Bearer dev", "If-None-Match": etag})
        assert (status, body, headers["ETag"]) == (304, b"", etag)
        assert get(path, {"Authorization": "Bearer dev", "If-None-Match": '"other"'})[0] == 200

        js = JudgeSettings(enabled=True)
        src = ReferenceSource(js, tmp_path / "cache", service_url=url + "/v1/ingest", token="dev")
        assert src.fetch(("m", "1")) == "ok" and src.get(("m", "1")).etag == etag
        assert src.fetch(("m", "1")) == "not_modified"
        assert src.fetch(("m", "2")) == "not_found"
        httpx.put(path, content=ref_bytes(reference(rng, n=3000)), headers={"Authorization": "Bearer w"})
        assert src.fetch(("m", "1")) == "ok" and src.get(("m", "1")).etag != etag  # a changed reference
        new_etag = src.get(("m", "1")).etag
    # the service is gone: a new source on the same disk still has the last reference
    offline = ReferenceSource(js, tmp_path / "cache", service_url=f"http://127.0.0.1:{free_port()}", token="dev")
    assert offline.get(("m", "1")).etag == new_etag and offline.get(("m", "1")).profile.rows == 3000
    assert offline.fetch(("m", "1")) == "error" and offline.get(("m", "1")).etag == new_etag
    assert offline.fetches["error"] == 1


def test_a_reference_file_serves_a_device_that_never_reaches_the_service(tmp_path: Path) -> None:
    from driftline.edge_sidecar.errors import SettingsError

    with pytest.raises(SettingsError, match="unknown drift method"):
        load_settings(None, judge={"thresholds": {"chi2": 0.1}})
    with pytest.raises(SettingsError, match="action_url"):
        load_settings(None, judge={"action_url": "file:///etc/passwd"})
    rng = np.random.default_rng(3)
    (tmp_path / "ref.dlp").write_bytes(ref_bytes(reference(rng)))
    s = load_settings(None, model="m", model_version="1", spool={"path": str(tmp_path / "spool"), "fsync": False},
                      transport={"kind": "kafka"}, judge={"enabled": True, "reference_files": [str(tmp_path / "ref.dlp")]})
    judge = Judge.from_settings(s)
    assert judge.references.service_url is None
    assert judge.references.get(("m", "1")).source == "file"
    w = WindowProfile(StreamKey.of("m", "1", source="d"), 0.0, 60.0)
    w.update(*rows(rng, 500, shift=2.0))
    verdict = judge.judge_window(w)
    assert verdict is not None and verdict["dataset_drift"] and w.verdict == verdict
    assert verdict["reference"].startswith("file:")


# ---- the decision rule and the action ------------------------------------------------------------

def test_the_judge_uses_the_services_decision_rule_and_debounces_its_action(tmp_path: Path) -> None:
    # the same config as the service's evaluator builds from its defaults
    from driftline.service.evaluation import Evaluator
    from driftline.stats import compare_profiles

    ev = Evaluator(store=None, settings=ServiceSettings())  # type: ignore[arg-type]
    assert JudgeSettings().drift_config("m") == ev.drift_config("m") == DriftConfig(critical_features=frozenset())
    rng = np.random.default_rng(4)
    js = JudgeSettings(enabled=True, persist_seconds=90, cooldown_seconds=1000, action_command=[
        sys.executable, "-c", f"import sys; open({str(tmp_path / 'out')!r}, 'ab').write(sys.stdin.buffer.read() + b'\\n')"])
    ref = reference(rng)
    (tmp_path / "ref.dlp").write_bytes(ref_bytes(ref))
    js = js.model_copy(update={"reference_files": [tmp_path / "ref.dlp"]})
    clock = [0.0]
    wall = [1e9]
    judge = Judge(js, ReferenceSource(js, None), ActionRunner(js), device="d", monotonic=lambda: clock[0],
                  clock=lambda: wall[0], state_dir=tmp_path / "state")
    verdicts = []
    for i, shift in enumerate([0, 0, 2, 2, 2, 0, 2, 2, 2]):
        w = WindowProfile(StreamKey.of("m", "1", source="d"), i * 60.0, (i + 1) * 60.0)
        w.update(*rows(rng, 400, shift))
        v = judge.judge_window(w)
        want = compare_profiles(ref, w, js.drift_config("m"))
        assert v["dataset_drift"] == want.dataset_drift and v["drift_share"] == round(want.drift_share, 6)
        verdicts.append(v["dataset_drift"])
        while not judge.actions._queue.empty():  # run queued actions here, synchronously
            judge.actions.run_one(judge.actions._queue.get())
        clock[0] += 60
        wall[0] += 60
    assert verdicts == [False, False, True, True, True, False, True, True, True]
    # drift from window 2 lasts 120 s at the end of window 3: one action; the second run falls in the cooldown
    assert judge.actions.results["ok"] == 1
    fired = [json.loads(line) for line in (tmp_path / "out").read_text().splitlines()]
    assert len(fired) == 1 and fired[0]["window"]["start"] == 180.0 and fired[0]["persisted_seconds"] == 120.0
    # a restarted sidecar (a fresh monotonic clock) remembers the cooldown; once it has passed, it acts again
    for later, expected in ((500.0, 0), (1000.0, 1)):
        again = Judge(js, ReferenceSource(js, None), ActionRunner(js), device="d", monotonic=lambda: 0.0,
                      clock=lambda t=later: 1e9 + 180.0 + t, state_dir=tmp_path / "state")
        for i in range(2):
            w = WindowProfile(StreamKey.of("m", "1", source="d"), 1e4 + i * 60.0, 1e4 + (i + 1) * 60.0)
            w.update(*rows(rng, 400, 2))
            again.judge_window(w)
        assert again.actions._queue.qsize() == expected
    st = judge.snapshot()[("m", "1")]
    assert st.rolling["windows"] == 6 and st.drift_since == 360.0
    # a scrape reads the snapshot
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry()
    reg.register(JudgeCollector(judge))
    assert reg.get_sample_value("driftline_sidecar_dataset_drift", {"model": "m", "version": "1"}) == 1.0
    assert reg.get_sample_value("driftline_sidecar_feature_drift_detected",
                                {"model": "m", "version": "1", "feature": "a"}) == 1.0
    assert reg.get_sample_value("driftline_sidecar_prediction_shift_score",
                                {"model": "m", "version": "1", "output": "score", "method": "ks"}) > 0.1
    assert reg.get_sample_value("driftline_sidecar_drift_actions_total", {"result": "ok"}) == 1.0


def test_the_judge_imports_and_judges_without_the_heavy_packages(tmp_path: Path) -> None:
    from tests.test_sidecar_footprint import FORBIDDEN

    code = textwrap.dedent(f"""
        import importlib.abc, sys
        BLOCKED = {sorted(FORBIDDEN | {"sklearn", "evidently"})!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        from driftline.edge_sidecar.judge import Judge
        from driftline.edge_sidecar.settings import load_settings
        from driftline.profile import StreamKey, WindowProfile
        from driftline.wire import Envelope, encode_envelope
        rng = np.random.default_rng(0)
        ref = WindowProfile(StreamKey.of("m", "1"), 0.0, 1.0)
        ref.update({{"a": rng.normal(0, 1, 2000)}})
        open({str(tmp_path / 'r.dlp')!r}, "wb").write(encode_envelope(Envelope([ref])))
        s = load_settings(None, spool={{"path": {str(tmp_path / 'sp')!r}}}, transport={{"kind": "kafka"}},
                          judge={{"enabled": True, "reference_files": [{str(tmp_path / 'r.dlp')!r}]}})
        w = WindowProfile(StreamKey.of("m", "1"), 0.0, 60.0)
        w.update({{"a": rng.normal(3, 1, 300)}})
        assert Judge.from_settings(s).judge_window(w)["dataset_drift"] is True
        print(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ---- end to end: offline, then back ----------------------------------------------------------------

def next_second() -> None:
    t = time.time()
    time.sleep(math.ceil(t) - t + 0.05)


def feed_window(sc: Sidecar, rng: np.random.Generator, shift: float, n: int = 400) -> None:
    """Rows for one fresh 1-second window, then wait for it to close and reach the spool."""
    written = sc.spool.written
    next_second()
    sc.monitor.observe(*rows(rng, n, shift))
    assert wait_until(lambda: sc.spool.written > written)


@pytest.fixture
def action() -> Iterator[ActionReceiver]:
    with ActionReceiver() as rx:
        yield rx


def test_offline_device_says_its_input_changed_and_the_cloud_agrees_after(tmp_path: Path,
                                                                           action: ActionReceiver) -> None:
    rng = np.random.default_rng(5)
    db = tmp_path / "svc.sqlite"
    s = svc_settings(db, port=free_port())
    sidecar_cfg = load_settings(
        None, device="cam-7", model="m", model_version="1",
        window={"seconds": 1, "lateness_seconds": 0, "tick_seconds": 0.05},
        spool={"path": str(tmp_path / "spool"), "fsync": False},
        transport={"http": {"url": f"http://127.0.0.1:{s.port}", "timeout_seconds": 2}},
        shipper={"backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.3, "shutdown_grace_seconds": 10},
        api={"port": 0}, judge={"enabled": True, "persist_seconds": 1.5, "cooldown_seconds": 600,
                                "poll_seconds": 0.5, "action_url": action.url})
    sc = Sidecar(sidecar_cfg)
    observed = 0
    try:
        with serving(create_app(s), s) as url:
            assert httpx.put(f"{url}/v1/models/m/versions/1/reference",
                             content=ref_bytes(reference(rng))).status_code == 200
            sc.start()
            assert wait_until(lambda: sc.judge.references.get(("m", "1")) is not None)
            for _ in range(2):
                feed_window(sc, rng, 0.0)
                observed += 400
            assert wait_until(lambda: sc.spool.stats().pending == 0)
        # the network is cut: the service is stopped, its port closed
        api = f"http://127.0.0.1:{sc.api.port}"
        before = sc.shipper.deliveries["ok"]
        feed_window(sc, rng, 2.0)
        feed_window(sc, rng, 2.0)
        observed += 800
        status, _, body = get(f"{api}/v1/drift")
        local = json.loads(body)
        stream = local["streams"][0]
        assert status == 200 and stream["window"]["dataset_drift"] is True and stream["persisted_seconds"] >= 1.5
        assert {"a", "b", "c"} <= set(stream["window"]["drifted"])
        assert wait_until(lambda: len(action.bodies) == 1, 10)
        assert action.bodies[0]["device"] == "cam-7" and action.bodies[0]["window"]["dataset_drift"] is True
        metrics = get(f"{api}/metrics")[2].decode()
        assert 'driftline_sidecar_dataset_drift{model="m",version="1"} 1.0' in metrics
        assert 'driftline_sidecar_drift_actions_total{result="ok"} 1.0' in metrics
        assert sc.spool.stats().pending >= 2 and sc.shipper.deliveries["ok"] == before  # nothing got through
        drift_range = (stream["window"]["start"] - 1.5, stream["window"]["end"])
        feed_window(sc, rng, 2.0)  # a third drifted window: in the cooldown, no second action
        observed += 400
        time.sleep(0.3)
        assert len(action.bodies) == 1
        # the network returns: the same port, the same database
        s2 = svc_settings(db, port=s.port)
        app = create_app(s2)
        with serving(app, s2) as url:
            assert wait_until(lambda: sc.spool.stats().pending == 0, 30)
            cloud = httpx.get(f"{url}/v1/models/m/drift", params={"since": drift_range[0],
                                                                    "until": drift_range[1]}).json()
            assert cloud["dataset_drift"] is True and cloud["windows"] == 2
            devices = httpx.get(f"{url}/v1/models/m/devices").json()["devices"]
            assert devices[0]["device"] == "cam-7" and devices[0]["device_verdict"]["dataset_drift"] is True
            page = httpx.get(f"{url}/models/m").text
            assert "Device says" in page and "drift (1)" in page
            sc.stop()
            sc = None  # type: ignore[assignment]
            rows_stored = sum(r.rows for r in app.state.parts.store.windows("m", "1"))
            assert rows_stored == observed  # no window lost
            # the device's verdict on each window and the service's verdict on the same window agree
            stored = app.state.parts.store.windows("m", "1")
            assert len(stored) >= 5 and all(r.profile.verdict is not None for r in stored)
            for r in stored:
                svc = app.state.parts.evaluator.drift("m", "1", since=r.end - 1e-6, until=r.end, source="cam-7").to_dict()
                assert svc["windows"] == 1
                assert (r.profile.verdict["dataset_drift"], r.profile.verdict["drift_share"]) == \
                    (svc["dataset_drift"], svc["drift_share"])
                assert r.profile.verdict["drifted"] == [f["name"] for f in svc["features"] if f["drift_detected"]]
    finally:
        if sc is not None:
            sc.stop(grace=0)
