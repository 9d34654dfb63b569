"""The service judges shadow models from the paired summaries shadow windows carry: API, metrics, status page."""

from __future__ import annotations

import time

import httpx
import numpy as np

from driftline.pairing import PairedSummary
from driftline.service.app import create_app
from driftline.service.settings import EvaluationSettings, ServiceSettings, ShadowSettings
from tests.service_support import envelope, serving, window


def settings(tmp_path) -> ServiceSettings:
    return ServiceSettings(database_url=f"sqlite:///{tmp_path / 'svc.sqlite'}", port=0,
                           evaluation=EvaluationSettings(current_window_seconds=3600, interval_seconds=3600),
                           shadow=ShadowSettings(min_pairs=300, t_star=200.0, error_tolerance=0.05))


def pairs(rng: np.random.Generator, requests: int, flip: float, noise: float, fail: float) -> PairedSummary:
    """What a sidecar folds for ``requests`` mirrored calls of 4 rows: ``flip`` of the labels differ,
    shadow scores are live scores plus N(0, noise), ``fail`` of the shadow calls fail."""
    s = PairedSummary()
    for _ in range(requests):
        failed = bool(rng.random() < fail)
        s.add_request(False, failed)
        if failed:
            continue
        live = rng.beta(5, 2, 4)
        labels = (live > 0.5).tolist()
        shadow = [(not v) if rng.random() < flip else v for v in labels]
        s.add_rows(4, labels, shadow, (rng.normal(0, noise, 4)).tolist())
    return s


def feed(c: httpx.Client, rng: np.random.Generator, model: str, **kw: float) -> PairedSummary:
    now = time.time()
    total = PairedSummary()
    for i in range(4):
        for dev in ("d1", "d2"):
            live = window(rng, model, "v1", variant="default", device=dev, start=now - 600 + i * 60, latency=3.0)
            shadow = window(rng, model, "v2", variant="shadow", device=dev, start=now - 600 + i * 60, latency=9.0)
            s = pairs(rng, 50, **kw)
            shadow.shadow = s.to_dict()
            total.merge(s)
            r = c.post("/v1/ingest", content=envelope(live, shadow, device=dev))
            assert r.status_code == 200 and r.json()["result"] == "accepted", r.text
    return total


def sample(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_shadow_verdicts_metrics_and_status_page(tmp_path) -> None:
    rng = np.random.default_rng(21)
    st = settings(tmp_path)
    app = create_app(st)
    with serving(app, st) as url, httpx.Client(base_url=url) as c:
        good = feed(c, rng, "good", flip=0.0, noise=0.001, fail=0.0)
        bad = feed(c, rng, "bad", flip=0.2, noise=0.001, fail=0.0)
        broken = feed(c, rng, "broken", flip=0.0, noise=0.001, fail=0.5)
        r = c.get("/v1/models/good/shadow")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["verdict"] == "ready", body["reasons"]
        assert body["summary"]["requests"] == good.requests == 400  # 8 windows from 2 devices, merged exactly
        assert body["summary"]["rows"] == good.rows and body["agreement"] == 1.0
        assert abs(body["score_diff_mean"] - good.score_mean) < 1e-12
        assert body["shadow_versions"] == ["v2"] and body["windows"] == 8
        lat = body["latency_p99_seconds"]
        assert lat["shadow"] > lat["live"] > 0  # each side's sketch merged from its own windows
        bad_body = c.get("/v1/models/bad/shadow").json()
        assert bad_body["verdict"] == "worse"
        assert abs(bad_body["agreement"] - bad.agree / bad.labelled) < 1e-12
        assert "disagreement" in " ".join(bad_body["reasons"])
        br = c.get("/v1/models/broken/shadow").json()
        assert br["verdict"] == "worse" and br["error_ratio"]["live"] == 0.0
        assert abs(br["error_ratio"]["shadow"] - broken.shadow_errors / broken.requests) < 1e-12
        missing = c.get("/v1/models/nobody/shadow")
        assert missing.status_code == 404 and "shadow" in missing.json()["error"]

        app.state.parts.shadow.evaluate_all()  # the background pass's call
        text = c.get("/metrics").text
        assert sample(text, "driftline_shadow_verdict", model="good", verdict="ready") == 1.0
        assert sample(text, "driftline_shadow_verdict", model="good", verdict="worse") == 0.0
        assert sample(text, "driftline_shadow_verdict", model="bad", verdict="worse") == 1.0
        assert sample(text, "driftline_shadow_agreement_ratio", model="good") == 1.0
        assert sample(text, "driftline_shadow_paired_requests", model="bad") == 400.0
        assert sample(text, "driftline_shadow_error_ratio", model="broken", side="shadow") == br["error_ratio"]["shadow"]
        p99 = {side: sample(text, "driftline_shadow_latency_p99_seconds", model="good", side=side)
               for side in ("live", "shadow")}
        assert p99["shadow"] > p99["live"] > 0  # a KLL sketch: the merge is randomised, compare sides not bits
        assert sample(text, "driftline_shadow_evaluation_errors_total") == 0.0

        page = c.get("/models/good").text
        assert "Shadow model" in page and ">ready<" in page and "400 paired requests" in page
        assert ">worse<" in c.get("/models/bad").text
