"""The status page in a real headless Chromium: what a person would look for, and a screenshot."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from driftline.service.settings import EvaluationSettings, ServiceSettings
from tests.service_support import envelope, reference_bytes, running_service, window

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
pytestmark = pytest.mark.browser


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: apt-get install chromium (scripts/test.sh does)", pytrace=False)
    return path


def browse(url: str, tmp: Path, *, screenshot: Path | None = None) -> str:
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp / 'profile'}", "--window-size=1400,1800"]
    if screenshot is not None:
        proc = subprocess.run([*args, f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=120)
        assert screenshot.exists() and screenshot.stat().st_size > 10_000, proc.stderr[-2000:]
    proc = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_status_page_in_headless_chromium(tmp_path) -> None:
    rng = np.random.default_rng(0)
    s = ServiceSettings(database_url=f"sqlite:///{tmp_path / 's.sqlite'}", port=0,
                        evaluation=EvaluationSettings(current_window_seconds=3600, interval_seconds=0.5,
                                                      history_bucket_seconds=120, drift_share_threshold=0.3))
    with running_service(s) as url, httpx.Client(base_url=url) as c:
        for version in ("v1", "v2"):
            c.put(f"/v1/models/camera/versions/{version}/reference", content=reference_bytes(rng, "camera", version))
        c.put("/v1/models/camera/canary", json={"baseline_version": "v1", "canary_version": "v2", "min_rows": 500,
                                               "min_duration_seconds": 60})
        now = time.time()
        for i in range(10):
            for dev in ("cam-01", "cam-02", "cam-03"):
                drifted = dev == "cam-02" and i >= 4
                p = window(rng, "camera", "v1", device=dev, start=now - 600 + i * 60, shift=2.0 if drifted else 0.0)
                c.post("/v1/ingest", content=envelope(p, device=dev)).raise_for_status()
            c.post("/v1/ingest", content=envelope(window(rng, "camera", "v2", variant="canary", device="cam-04",
                                                         start=now - 600 + i * 60))).raise_for_status()
        deadline = time.monotonic() + 20
        while "driftline_dataset_drift_share{" not in c.get("/metrics").text and time.monotonic() < deadline:
            time.sleep(0.2)
        ARTIFACTS.mkdir(exist_ok=True)
        index = browse(f"{url}/", tmp_path, screenshot=ARTIFACTS / "status-index.png")
        model = browse(f"{url}/models/camera", tmp_path, screenshot=ARTIFACTS / "status-model.png")
    # the landing page lists the model with its drift state and canary verdict
    assert "camera" in index and "Drift state" in index and "Canary" in index
    assert "DRIFT" in index or "stable" in index
    # the model page: heatmap, prediction shift, canary panel and devices ranked by drift
    assert "Feature drift over time" in model and "class=\"heat\"" in model
    assert "Prediction shift" in model and "score" in model
    assert "Verdict" in model and "v2" in model
    ranked = model[model.index("Devices ranked by drift"):]
    assert ranked.index("cam-02") < ranked.index("cam-01")  # the drifted device comes first


LAYOUT = """JSON.stringify({
  page: document.documentElement.scrollWidth,
  viewport: window.innerWidth,
  hidden: [...document.querySelectorAll('.scroll')].filter(e => e.scrollWidth > e.clientWidth + 1)
            .map(e => e.querySelector('table')?.getAttribute('aria-label') || e.innerText.slice(0, 60)),
  text: document.body.innerText
})"""


def test_every_page_is_readable_at_1280px_and_versions_link_to_each_other(tmp_path) -> None:
    """A version without a reference (the newest, wide, long-named data) neither hides the others nor overflows."""
    import json

    from tests.browser_support import Chromium

    rng = np.random.default_rng(1)
    s = ServiceSettings(database_url=f"sqlite:///{tmp_path / 's.sqlite'}", port=0,
                        evaluation=EvaluationSettings(current_window_seconds=3600, interval_seconds=0.5,
                                                      history_bucket_seconds=60, drift_share_threshold=0.3))
    with running_service(s) as url, httpx.Client(base_url=url) as c:
        for version in ("v1", "v2"):
            c.put(f"/v1/models/camera/versions/{version}/reference",
                  content=reference_bytes(rng, "camera", version)).raise_for_status()
        c.put("/v1/models/camera/canary", json={"baseline_version": "v1", "canary_version": "v2", "min_rows": 500,
                                               "min_duration_seconds": 60}).raise_for_status()
        now = time.time()
        for i in range(45):  # more buckets than the heatmap shows: its widest form
            for dev in ("camera-device-with-a-rather-long-name-01", "cam-02"):
                p = window(rng, "camera", "v1", device=dev, start=now - 2800 + i * 60, shift=1.5 if i > 30 else 0)
                c.post("/v1/ingest", content=envelope(p, device=dev)).raise_for_status()
            c.post("/v1/ingest", content=envelope(window(rng, "camera", "v2", variant="canary", device="cam-04",
                                                         start=now - 2800 + i * 60))).raise_for_status()
        # the newest data comes from a version nobody uploaded a reference for
        c.post("/v1/ingest", content=envelope(window(rng, "camera", "v3", device="cam-05", start=now - 30,
                                                     length=20))).raise_for_status()
        assert c.get("/v1/models/camera/drift").json()["version"] == "v1"
        missing = c.get("/v1/models/camera/drift", params={"version": "v3"})
        assert missing.status_code == 404 and "driftline reference" in missing.json()["detail"]
        ARTIFACTS.mkdir(exist_ok=True)
        pages = {"index": "/", "model": "/models/camera", "model-v2": "/models/camera?version=v2",
                 "model-no-reference": "/models/camera?version=v3", "unknown-model": "/models/nothing-here"}
        seen = {}
        with Chromium(tmp_path / "profile") as browser:
            for name, path in pages.items():
                browser.open(url + path, width=1280, height=900)
                layout = json.loads(browser.evaluate(LAYOUT))
                assert browser.screenshot(ARTIFACTS / f"page-{name}-1280.png") > 10_000
                assert layout["viewport"] == 1280
                assert layout["page"] <= 1280, f"{path} is {layout['page']} px wide at 1280"
                assert layout["hidden"] == [], f"{path}: content scrolls sideways inside {layout['hidden']}"
                seen[name] = layout["text"]
    # the default is the newest version that has a reference; every version is listed with its state
    assert "camera version v1" in seen["model"]
    for v in ("v1", "v2", "v3"):
        assert v in seen["model"]
    assert "v3 (no reference" in seen["model"] and "v1 (reference" in seen["model"]
    # a version without a reference says what to do, and still links the others
    text = seen["model-no-reference"]
    assert "no reference for model 'camera' version 'v3'" in text
    assert "driftline reference build" in text and "--upload" in text and "versions with a reference: v1, v2" in text
    assert "no data and no reference" in seen["unknown-model"]
