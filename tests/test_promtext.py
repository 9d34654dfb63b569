"""``render_text`` writes exactly what ``prometheus_client.generate_latest`` writes."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from driftline.promtext import render_text


class _Odd:
    """A custom collector with the awkward cases: escapes, timestamps, special floats, odd label names."""

    def collect(self):
        g = GaugeMetricFamily("driftline_test_gauge", 'help with \\ backslash\nand "quotes"',
                              labels=["model", "b", "a"])
        g.add_metric(['with "quote"', "back\\slash", "new\nline"], 1.5)
        g.add_metric(["plain", "x", "y"], float("inf"))
        g.add_metric(["nan", "x", "y"], float("nan"))
        g.add_metric(["neg", "x", "y"], float("-inf"))
        g.add_metric(["big", "x", "y"], 123456789.0, timestamp=1700000000.123)
        g.add_metric(["small", "x", "y"], 1e-9)
        g.add_metric(["ünïcode", "x", "y"], -3.0)
        yield g
        c = CounterMetricFamily("driftline_test_events", "events", labels=["kind"], created=1700000000.0)
        c.add_metric(["a"], 3)
        yield c
        m = Metric("driftline_test_untyped", "untyped one", "unknown")
        m.add_sample("driftline_test_untyped", {"bad-label": "v"}, 2.0)
        yield m
        e = GaugeMetricFamily("driftline_test_empty", "no samples")
        yield e


def test_same_bytes_as_generate_latest_for_every_metric_type() -> None:
    reg = CollectorRegistry()
    Counter("driftline_c", "a counter", ["x"], registry=reg).labels("1").inc(2)
    Gauge("driftline_g", "a gauge", registry=reg).set(12345678.0)
    h = Histogram("driftline_h_seconds", "a histogram", ["route"], registry=reg)
    for v in (0.001, 0.2, 3.0, 50.0):
        h.labels("/v1").observe(v)
    Summary("driftline_s_seconds", "a summary", registry=reg).observe(0.5)
    Info("driftline_build", "build info", registry=reg).info({"version": "1.0", "commit": "abc"})
    Enum("driftline_state", "a state set", states=["up", "down"], registry=reg).state("down")
    reg.register(_Odd())
    assert render_text(reg) == generate_latest(reg)


def test_a_name_outside_the_legacy_set_falls_back_to_generate_latest() -> None:
    reg = CollectorRegistry()

    class Dotted:
        def collect(self):
            g = GaugeMetricFamily("driftline.dotted", "utf-8 name")
            g.add_metric([], 1.0)
            yield g

    reg.register(Dotted())
    assert render_text(reg) == generate_latest(reg)


def _steady(text: bytes) -> list[str]:
    """Lines whose values do not move between two scrapes (process CPU, memory, GC counts and the
    request timings, which count the scrape itself, do)."""
    return [ln for ln in text.decode().splitlines()
            if not ln.startswith(("process_", "python_gc_", "driftline_http_request"))]


def test_the_service_metrics_endpoint_serves_what_generate_latest_writes(tmp_path: Path) -> None:
    """Over HTTP, with real data in: drift, ingest, cohorts (one with a quote in its value)."""
    import time

    import httpx
    import numpy as np

    from driftline.service.app import create_app
    from driftline.service.settings import EvaluationSettings, ServiceSettings
    from tests.service_support import envelope, reference_bytes, serving, window

    rng = np.random.default_rng(3)
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 's.sqlite'}", port=0,
                               evaluation=EvaluationSettings(current_window_seconds=3600, interval_seconds=0.2))
    app = create_app(settings)
    now = time.time()
    with serving(app, settings) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert c.put("/v1/models/m/versions/v1/reference", content=reference_bytes(rng, "m", "v1")).status_code == 200
        for i, site in enumerate(["oslo", 'say "hi"', "back\\slash"]):
            w = window(rng, "m", "v1", start=now - 600 + 60 * i, shift=0.5, site=site)
            assert c.post("/v1/ingest", content=envelope(w)).status_code == 200
        deadline = time.monotonic() + 30
        while b"driftline_feature_drift" not in c.get("/metrics").content:
            assert time.monotonic() < deadline, "no drift series after 30 s"
            time.sleep(0.2)
        # evaluation passes run every 0.2 s, so a pass may land between the two renderings: the
        # same state must give the same text at least once in ten tries
        mismatch = None
        for _ in range(10):
            served = c.get("/metrics")
            assert served.headers["content-type"].startswith("text/plain; version=")
            mismatch = _difference(_steady(served.content), _steady(generate_latest(app.state.parts.registry)))
            if mismatch is None:
                break
            time.sleep(0.3)
    assert mismatch is None, mismatch
    assert any('say \\"hi\\"' in ln for ln in _steady(served.content))


def _difference(lines: list[str], want: list[str]) -> str | None:
    if len(lines) < 50 or [ln.rsplit(" ", 1)[0] for ln in lines] != [ln.rsplit(" ", 1)[0] for ln in want]:
        return f"series differ: {len(lines)} vs {len(want)} lines"
    for got, exp in zip(lines, want, strict=True):
        if got != exp:  # clocks move between the two renderings: ages and lags, in seconds
            name = got.split("{")[0].split(" ")[0]
            if not (name.endswith("_seconds") and abs(float(got.rsplit(" ", 1)[1]) - float(exp.rsplit(" ", 1)[1])) < 5):
                return f"{got!r} != {exp!r}"
    return None
