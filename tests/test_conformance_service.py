"""The service's side of golden-set conformance over real HTTP: newest result per device, restarts,
hostile devices (results for models they send no windows of, too many entries, older results), the
cohort breakdown and the status page section."""

from __future__ import annotations

import time

import httpx
import numpy as np

from driftline.conformance import GoldenSet, compare
from driftline.service.settings import EvaluationSettings, ServiceSettings
from driftline.wire import Envelope, encode_envelope
from tests.service_support import metric_samples, running_service, window


def settings(tmp_path) -> ServiceSettings:
    return ServiceSettings(database_url=f"sqlite:///{tmp_path / 'svc.sqlite'}", port=0,
                           evaluation=EvaluationSettings(current_window_seconds=3600, interval_seconds=3600))


def entry(passed: bool, at: float, driver: str, model: str = "m", version: str = "v1") -> dict:
    x = np.arange(12.0).reshape(6, 2)
    g = GoldenSet(model, version, {"x": x}, {"score": x.sum(axis=1)})
    got = x.sum(axis=1) + (0.0 if passed else np.array([0, 0, 0.5, 0, 0, 0]))
    return compare(g, {"score": got}).to_wire(g, trigger="start", evaluated_at=at,
                                              cohort={"driver": driver, "site": "oslo"})


def post(c: httpx.Client, rng: np.random.Generator, device: str, entries: list[dict], model: str = "m") -> httpx.Response:
    p = window(rng, model, "v1", device=device, start=time.time() - 120 + rng.random(), n=50)
    env = Envelope([p], producer={"name": "test", "device": device}, conformance=entries)
    return c.post("/v1/ingest", content=encode_envelope(env))


def test_newest_result_per_device_survives_a_restart_and_hostile_entries_are_dropped(tmp_path) -> None:
    rng = np.random.default_rng(0)
    now = time.time()
    with running_service(settings(tmp_path)) as url, httpx.Client(base_url=url, timeout=10) as c:
        assert "No device has reported a golden-set run" in c.get("/models/m?version=v1").text
        assert post(c, rng, "d1", [entry(True, now - 50, "drv-1")]).status_code == 200
        assert post(c, rng, "d2", [entry(False, now - 40, "drv-2")]).status_code == 200
        assert post(c, rng, "d3", [entry(True, now - 40, "drv-1")]).status_code == 200
        # an older result (a spooled envelope delivered late) does not replace d3's newer one
        assert post(c, rng, "d3", [entry(False, now - 100, "drv-1")]).status_code == 200
        # a result for a model this envelope carries no windows of is dropped (d1 cannot speak for "other")
        assert post(c, rng, "d1", [entry(False, now, "drv-1", model="other")]).status_code == 200
        # more entries than the bound refuse the envelope as malformed
        assert post(c, rng, "d1", [entry(True, now, "drv-1")] * 17).status_code == 400
        text = c.get("/metrics").text
        devices = metric_samples(text, "driftline_edge_conformance_devices")
        assert devices == {(("model", "m"), ("result", r), ("version", "v1")): n
                           for r, n in (("pass", 2), ("fail", 1), ("error", 0))}
        assert metric_samples(text, "driftline_edge_conformance_dropped_entries_total") == {(): 1.0}
        cohort = metric_samples(text, "driftline_edge_conformance_cohort_devices")
        assert cohort == {  # "site" is not a conformance cohort label (firmware, runtime, driver are)
            (("cohort_label", "driver"), ("cohort_value", "drv-1"), ("model", "m"), ("result", "pass"),
             ("version", "v1")): 2.0,
            (("cohort_label", "driver"), ("cohort_value", "drv-2"), ("model", "m"), ("result", "fail"),
             ("version", "v1")): 1.0}
        assert metric_samples(text, "driftline_edge_conformance_max_abs_diff") == {(("model", "m"), ("version", "v1")): 0.5}
        assert metric_samples(text, "driftline_edge_conformance_cohort_max_abs_diff")[
            (("cohort_label", "driver"), ("cohort_value", "drv-2"), ("model", "m"), ("version", "v1"))] == 0.5
        page = c.get("/models/m?version=v1").text
        assert "Golden-set conformance" in page and "MISMATCH" in page and "driver=drv-2 (1)" in page
        assert "<b>d2</b> fail" in page and "<b>d3</b>" not in page
    # a restart reads the same state back from the store
    with running_service(settings(tmp_path)) as url, httpx.Client(base_url=url, timeout=10) as c:
        devices = metric_samples(c.get("/metrics").text, "driftline_edge_conformance_devices")
        assert devices[(("model", "m"), ("result", "fail"), ("version", "v1"))] == 1
        assert devices[(("model", "m"), ("result", "pass"), ("version", "v1"))] == 2
        # d2's fixed driver passes its next run: the failure clears
        assert post(c, rng, "d2", [entry(True, now - 10, "drv-2b")]).status_code == 200
        devices = metric_samples(c.get("/metrics").text, "driftline_edge_conformance_devices")
        assert devices[(("model", "m"), ("result", "fail"), ("version", "v1"))] == 0
        assert devices[(("model", "m"), ("result", "pass"), ("version", "v1"))] == 3
