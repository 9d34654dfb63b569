"""Multivariate drift end to end: a reference with a reconstruction model on a real service, a real
sidecar fetching it and sketching per-row errors, the service's verdict, metrics and drill-downs.

Also the domain classifier on its own (service/domain_classifier.py): it names the shifted features.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from driftline.edge_sidecar.runner import Sidecar
from driftline.edge_sidecar.settings import load_settings
from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.reconstruction import fit_reconstruction
from driftline.service.app import create_app
from driftline.service.domain_classifier import domain_classifier
from driftline.service.errors import BadRequest
from driftline.service.settings import EvaluationSettings, ServiceSettings
from driftline.wire import Envelope, encode_envelope
from tests.harness.ports import free_port
from tests.service_support import serving
from tests.sidecar_support import wait_until


def draw(rng: np.random.Generator, n: int, rho: float) -> dict[str, np.ndarray]:
    x = rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], n)
    return {"a": x[:, 0], "b": x[:, 1], "c": rng.normal(size=n), "d": rng.normal(size=n)}


def rows_of(cols: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return [dict(zip(cols, vals, strict=True)) for vals in zip(*(cols[k].tolist() for k in cols), strict=True)]


def test_the_domain_classifier_names_the_shifted_features() -> None:
    rng = np.random.default_rng(11)
    ref = draw(rng, 400, 0.8)
    cur = draw(rng, 400, 0.8)
    cur["c"] = cur["c"] + 1.0  # a mean shift of one feature
    ref_rows = rows_of(ref)
    cur_rows = [{**r, "output:score": 1.0} for r in rows_of(cur)]  # outputs are left out
    res = domain_classifier(ref_rows, cur_rows)
    assert res.drift_detected and res.auc > res.bound
    assert res.importances[0][0] == "c" and {n for n, _ in res.importances} == {"a", "b", "c", "d"}
    same = domain_classifier(ref_rows, rows_of(draw(rng, 400, 0.8)))
    assert not same.drift_detected and same.auc < same.bound
    with pytest.raises(BadRequest, match="50 sample rows"):
        domain_classifier(ref_rows[:10], cur_rows)


def next_second() -> None:
    t = time.time()
    time.sleep(math.ceil(t) - t + 0.05)


def test_a_correlation_flip_seen_by_a_real_sidecar_is_flagged_by_the_service_only_multivariately(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(21)
    s = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'svc.sqlite'}", port=free_port(),
                        api_token=SecretStr("w"), read_token=SecretStr("r"),
                        evaluation=EvaluationSettings(current_window_seconds=3600, interval_seconds=3600))
    ref_cols = draw(rng, 5000, 0.8)
    ref = WindowProfile(StreamKey.of("m", "1", "reference", "training"), 0.0, 0.0, ProfileConfig(reservoir_size=500))
    ref.update(ref_cols)
    model, ref.reconstruction = fit_reconstruction(ref_cols)
    cfg = load_settings(
        None, device="cam-1", model="m", model_version="1", profile={"reservoir_size": 250},
        window={"seconds": 1, "lateness_seconds": 0, "tick_seconds": 0.05},
        spool={"path": str(tmp_path / "spool"), "fsync": False},
        transport={"http": {"url": f"http://127.0.0.1:{s.port}", "timeout_seconds": 2, "token": "w"}},
        shipper={"backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.3, "shutdown_grace_seconds": 10},
        api={"port": 0}, judge={"enabled": True, "poll_seconds": 0.5})
    sc = Sidecar(cfg)
    read = {"Authorization": "Bearer r"}
    app = create_app(s)
    try:
        with serving(app, s) as url:
            body = encode_envelope(Envelope([ref], producer={"name": "test"}))
            assert httpx.put(f"{url}/v1/models/m/versions/1/reference", content=body,
                             headers={"Authorization": "Bearer w"}).status_code == 200
            got = httpx.get(f"{url}/v1/models/m/versions/1/reconstruction", headers=read)
            assert got.status_code == 200 and got.headers["x-driftline-model-digest"] == model.digest
            assert httpx.get(f"{url}/v1/models/m/versions/1/reconstruction",
                             headers={**read, "If-None-Match": got.headers["etag"]}).status_code == 304
            assert httpx.get(f"{url}/v1/models/m/versions/1/reconstruction").status_code == 401
            sc.start()
            assert wait_until(lambda: sc.judge.references.get(("m", "1")) is not None)
            spans = []
            for rho in (0.8, 0.8, -0.8, -0.8):
                written = sc.spool.written
                next_second()
                t0 = time.time()
                sc.monitor.observe(draw(rng, 400, rho))
                assert wait_until(lambda w=written: sc.spool.written > w)
                spans.append((t0 - 0.5, time.time()))
            assert wait_until(lambda: sc.spool.stats().pending == 0, 30)
            stored = app.state.parts.store.windows("m", "1")
            assert len(stored) == 4 and all(r.profile.reconstruction is not None for r in stored)
            assert all(r.profile.reconstruction.digest == model.digest for r in stored)  # type: ignore[union-attr]
            assert sum(r.profile.reconstruction.column.count for r in stored) == 1600  # type: ignore[union-attr]
            same = (spans[0][0], spans[1][1])
            flip = (stored[2].start, stored[3].end)
            for (since, until), expect in ((same, "ok"), (flip, "drift")):
                uni = httpx.get(f"{url}/v1/models/m/drift", params={"since": since, "until": until}, headers=read).json()
                assert uni["dataset_drift"] is False and not any(f["drift_detected"] for f in uni["features"])
                mv = httpx.get(f"{url}/v1/models/m/versions/1/drift/multivariate",
                               params={"since": since, "until": until}, headers=read).json()
                assert mv["current"]["status"] == expect and mv["current"]["rows"] == 800, mv
                assert mv["model_digest"] == model.digest and len(mv["windows"]) == 2
            app.state.background.run_once(stored[3].end + 1)
            metrics = httpx.get(f"{url}/metrics", headers=read).text
            assert 'driftline_multivariate_drift_detected{model="m",version="1"} 1.0' in metrics
            assert 'driftline_multivariate_drift_rows{model="m",version="1"} 1600.0' in metrics
            dc = httpx.get(f"{url}/v1/models/m/versions/1/drift/domain-classifier",
                           params={"since": flip[0], "until": flip[1]}, headers=read, timeout=120)
            assert dc.status_code == 200, dc.text
            found = dc.json()
            assert found["drift_detected"] is True and found["current_rows"] == 250  # merged reservoirs keep one window's capacity
            assert {f["name"] for f in found["features"][:2]} == {"a", "b"}  # the flipped pair separates
            page = httpx.get(f"{url}/models/m", headers=read).text
            assert "Multivariate" in page
    finally:
        sc.stop()


def test_the_monitor_sketches_errors_on_the_batch_and_row_paths_and_survives_a_broken_model(tmp_path: Path) -> None:
    from driftline.edge_sidecar.judge import ReferenceSource
    from driftline.edge_sidecar.monitor import Monitor
    from driftline.edge_sidecar.monitorconfig import MonitorConfig
    from driftline.edge_sidecar.settings import JudgeSettings
    from driftline.reconstruction import ErrorSketch
    from driftline.wire import write_profile_file

    rng = np.random.default_rng(9)
    cols = draw(rng, 2000, 0.8)
    good = WindowProfile(StreamKey.of("m", "1", "reference", "training"), 0.0, 0.0).update(cols)
    model, good.reconstruction = fit_reconstruction(cols)
    bad = WindowProfile(StreamKey.of("m", "2", "reference", "training"), 0.0, 0.0).update(cols)
    bad.reconstruction = ErrorSketch("v1-broken", model=b"\xc1 not a model")
    paths = [tmp_path / "good.dlp", tmp_path / "bad.dlp"]
    write_profile_file(paths[0], good)
    write_profile_file(paths[1], bad)
    refs = ReferenceSource(JudgeSettings(enabled=True, reference_files=paths), None)
    assert refs.reconstruction(StreamKey.of("m", "2")) is None  # logged, never raised
    assert refs.reconstruction(StreamKey.of("m", "1")).digest == model.digest  # type: ignore[union-attr]
    assert refs.reconstruction(StreamKey.of("m", "3")) is None  # no reference at all
    mon = Monitor(MonitorConfig(model="m", window_seconds=3600, lateness_seconds=3600))
    mon.set_reconstruction(refs.reconstruction)
    batch = draw(rng, 300, -0.8)
    mon.observe(batch, model_version="1")  # the batch path
    single = draw(rng, 50, 0.8)
    for row in rows_of(single):  # the row path
        mon.observe_row(row, model_version="1")
    mon.observe(batch, model_version="2")  # a broken model: rows still counted, no errors sketched
    mon.close()
    closed = {w.profile.key.model_version: w.profile for w in mon.take_closed()}
    one = closed["1"].reconstruction
    assert one is not None and one.digest == model.digest and one.column.count == 350 and one.model is None
    assert np.isclose(one.column.sum, model.errors(batch).sum() + model.errors(single).sum())
    assert closed["2"].rows == 300 and closed["2"].reconstruction is None
