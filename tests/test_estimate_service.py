"""The service's label-free performance estimate: a calibrated reference, sidecar-shaped windows per cohort,
the background pass, ``/v1/models/{model}/estimate``, the collector (checked by promtool) and the status page."""

from __future__ import annotations

import subprocess
import time

import httpx
import numpy as np

from driftline.columns import NumericColumn
from driftline.estimate import METRICS, CalibrationBuilder, realised_performance
from driftline.profile import StreamKey, WindowProfile
from driftline.service.settings import EvaluationSettings, ServiceSettings
from driftline.wire import encode_profile
from tests.estimate_cases import THRESHOLD, draw
from tests.service_support import envelope, running_service


def _reference(rng: np.random.Generator) -> bytes:
    d = draw(rng, 20_000)
    ref = WindowProfile(StreamKey.of("m", "v1", "reference", "training"), 0.0, 0.0)
    ref.update({"x0": d["x0"], "x1": d["x1"]}, {"score": d["score"]})
    col = ref.outputs["score"]
    assert isinstance(col, NumericColumn)
    ref.calibration = CalibrationBuilder.from_column("score", col, threshold=THRESHOLD).update(d["score"], d["y"]).fit().to_dict()
    return encode_profile(ref)


def test_estimates_per_cohort_reach_the_api_metrics_and_status_page(tmp_path, prometheus_binaries) -> None:
    rng = np.random.default_rng(11)
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'svc.sqlite'}", port=0,
                               evaluation=EvaluationSettings(current_window_seconds=3600, interval_seconds=0.5))
    now = time.time()
    labelled: dict[str, list[dict[str, np.ndarray]]] = {"oslo": [], "lima": []}
    with running_service(settings) as url, httpx.Client(base_url=url) as c:
        assert c.put("/v1/models/m/versions/v1/reference", content=_reference(rng)).status_code == 200
        assert c.put("/v1/models/plain/versions/v1/reference",  # no calibration: no estimate, no error
                     content=encode_profile(WindowProfile(StreamKey.of("plain", "v1"), 0.0, 0.0).update(
                         {"a": rng.normal(size=100)}, {"score": rng.random(100)}))).status_code == 200
        for i in range(4):
            for site, shift in (("oslo", 0.0), ("lima", 0.8)):  # lima's inputs moved: covariate shift
                d = draw(rng, 1500, shift=shift)
                labelled[site].append(d)
                p = WindowProfile(StreamKey.of("m", "v1", "baseline", f"dev-{site}", {"site": site}),
                                  now - 900 + i * 60, now - 840 + i * 60)
                p.update({"x0": d["x0"], "x1": d["x1"]}, {"score": d["score"]})
                assert c.post("/v1/ingest", content=envelope(p)).json()["result"] == "accepted"
        deadline = time.monotonic() + 30
        r = c.get("/v1/models/m/estimate")
        while (r.status_code != 200 or r.json()["estimates"][0]["rows"] < 12_000) and time.monotonic() < deadline:
            time.sleep(0.2)
            r = c.get("/v1/models/m/estimate")
        body = r.json()
        assert r.status_code == 200 and body["version"] == "v1", body
        by = {(e["cohort_label"], e["cohort_value"]): e for e in body["estimates"]}
        assert set(by) == {("", ""), ("site", "oslo"), ("site", "lima")}
        for key, site_rows in ((("site", "oslo"), labelled["oslo"]), (("site", "lima"), labelled["lima"]),
                               (("", ""), labelled["oslo"] + labelled["lima"])):
            scores = np.concatenate([d["score"] for d in site_rows])
            real = realised_performance(scores, np.concatenate([d["y"] for d in site_rows]), THRESHOLD)
            est = by[key]
            assert est["rows"] == scores.size and est["status"] == "ok"
            for m in METRICS:
                band = est["metrics"][m]
                assert band["lower"] <= real[m] <= band["upper"], (key, m, band, real[m])
        assert c.get("/v1/models/plain/estimate").status_code == 404
        assert c.get("/v1/models/m/estimate", params={"version": "v9"}).status_code == 404
        page = c.get("/models/m").text
        assert "Estimated performance (no labels)" in page and "site=lima" in page
        text = c.get("/metrics").text
    for family in ("driftline_model_estimated_performance_ratio", "driftline_model_estimated_performance_lower_ratio",
                   "driftline_model_estimated_performance_upper_ratio", "driftline_model_estimated_performance_rows"):
        assert f"\n{family}{{" in text, family
    assert ('driftline_model_estimated_performance_rows{cohort_label="site",cohort_value="lima",model="m",'
            'version="v1"} 6000.0') in text
    assert 'driftline_model_estimate_errors_total{model="plain"}' not in text
    check = subprocess.run([str(prometheus_binaries.promtool), "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0 and check.stdout.strip() == "" and check.stderr.strip() == "", check.stderr
