"""Leaks and latency regressions per device: the trend statistics against scipy, the host watch, the
service's bounded sample series, and real sidecar processes whose host process leaks at a known rate."""

from __future__ import annotations

import http.client
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats as st
import yaml

from driftline.edge_sidecar.hostwatch import HostWatch, read_proc
from driftline.profile import StreamKey, WindowProfile
from driftline.service.app import create_app
from driftline.service.device_health import DeviceHealth
from driftline.service.settings import DeviceHealthSettings, ServiceSettings
from driftline.service.store import Store
from driftline.trends import (
    TrendError,
    kendall_s_sf,
    latency_regression,
    leak_decision,
    mann_whitney_greater,
    rate_series,
    theil_sen,
)
from driftline.wire import Envelope, encode_envelope
from tests.harness.ports import free_port, wait_for_port
from tests.service_support import metric_samples, serving

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def _until(cond: Any, timeout: float) -> Any:
    """Poll ``cond`` until it returns something truthy (returned) for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"not met in {timeout} s")


# ---- the statistics ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [41, 80, 300])
@pytest.mark.parametrize("rounding", [None, -5])  # -5: ties in y, Sen's tie correction
def test_theil_sen_matches_scipy_on_raw_data_with_the_normal_interval(n: int, rounding: int | None) -> None:
    rng = np.random.default_rng(n)
    x = np.sort(rng.uniform(0, 6 * 3600, n))
    y = 3e6 * x / 3600 + rng.standard_t(2, n) * 4e5  # heavy tails: what least squares gets wrong
    if rounding is not None:
        y = np.round(y, rounding)
    for conf in (0.9, 0.95, 0.99):
        tr = theil_sen(x, y, conf)
        ref = st.theilslopes(y, x / 3600, alpha=conf)
        assert tr.method == "normal" and tr.n == n
        assert tr.slope == pytest.approx(ref.slope, rel=1e-12)
        assert (tr.lower, tr.upper) == pytest.approx((ref.low_slope, ref.high_slope), rel=1e-12)


def test_kendall_exact_null_matches_scipy_and_the_exact_interval_covers() -> None:
    rng = np.random.default_rng(7)
    for n in (4, 9, 17, 30):
        x, y = np.arange(n), rng.permutation(n)
        tau = st.kendalltau(x, y, method="exact", alternative="greater")
        s = round(tau.statistic * n * (n - 1) / 2)
        assert kendall_s_sf(s, n) == pytest.approx(tau.pvalue, rel=1e-9)
    hits, reps = 0, 400  # coverage of the exact 90 % interval at n = 12: at least nominal, up to sampling error
    for _ in range(reps):
        x = np.sort(rng.uniform(0, 3600, 12))
        tr = theil_sen(x, 5.0 * x / 3600 + rng.normal(0, 1, 12), 0.9)
        assert tr.method == "exact"
        hits += tr.lower <= 5.0 <= tr.upper
    assert hits / reps >= 0.86
    short = theil_sen([0, 60, 120], [1, 2, 3], 0.95)  # 3 points cannot reach 95 %: unbounded, never a leak
    assert short.lower == -math.inf and not leak_decision(short, 0.0, 2)
    with pytest.raises(TrendError):
        theil_sen([1, 2], [1], 0.95)


def test_mann_whitney_matches_scipy_exact_and_asymptotic() -> None:
    rng = np.random.default_rng(3)
    for m, n in ((3, 5), (6, 12), (6, 48), (10, 30)):
        a, b = rng.normal(1.3, 1, m), rng.normal(1, 1, n)
        method = "exact" if m * n <= 400 else "asymptotic"
        ref = st.mannwhitneyu(a, b, alternative="greater", method=method).pvalue
        assert mann_whitney_greater(a, b) == pytest.approx(ref, rel=1e-9)
        a, b = np.round(a), np.round(b)  # ties: the normal approximation with tie correction
        ref = st.mannwhitneyu(a, b, alternative="greater", method="asymptotic").pvalue
        assert mann_whitney_greater(a, b) == pytest.approx(ref, rel=1e-9)


def test_latency_regression_needs_significance_and_size_and_rates_skip_restarts() -> None:
    rng = np.random.default_rng(5)
    base = rng.gamma(20, 0.5, 24)  # p95s around 10 ms
    slower = latency_regression([*base, *(rng.gamma(20, 0.5, 6) * 1.6)])
    assert slower is not None and slower.regressed and slower.ratio > 1.3 and slower.p_value < 0.01
    same = latency_regression([*base, *rng.gamma(20, 0.5, 6)])
    assert same is not None and not same.regressed
    tiny = latency_regression([*base, *(rng.gamma(2000, 0.005, 6) * 1.05)])  # significant, but only ~5 %
    assert tiny is not None and not tiny.regressed
    assert latency_regression(base[:10]) is None
    t, r = rate_series([0, 10, 20, 30, 40], [0.0, 1.0, 2.0, 0.1, 1.1])  # a restart between 20 and 30
    assert list(t) == [5, 15, 35] and list(r) == pytest.approx([0.1, 0.1, 0.1])


# ---- the host watch ---------------------------------------------------------------------------------
def test_host_watch_reads_proc_and_counts_a_vanished_pid_and_a_bad_pid_file(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; b = b'x' * (8 << 20); time.sleep(30)"])
    try:
        pid_file = tmp_path / "host.pid"
        pid_file.write_text(f"{child.pid}\n")
        watch = HostWatch(pid_file=pid_file)
        _until(lambda: (fp := watch.read()) is not None and fp.rss_bytes > 8 * MIB, 10)
        keys = watch.producer_keys()
        assert keys["host_pid"] == str(child.pid) and int(keys["host_rss_bytes"]) > 8 * MIB
        assert abs(float(keys["host_started_at"]) - time.time()) < 60
        assert read_proc(os.getpid()).cpu_seconds > 0
    finally:
        child.kill()
        child.wait()
    assert watch.producer_keys() == {"host_read_failures": "1"}  # gone: counted, no exception
    pid_file.write_text("not a pid")
    assert watch.producer_keys() == {"host_read_failures": "2"}
    pid_file.write_bytes(b"1" * 1000)
    assert watch.read() is None and watch.failures == 3 and "pid file" in (watch.last_error or "")
    assert HostWatch().producer_keys() == {}


# ---- the service's series ---------------------------------------------------------------------------
def _health(tmp_path: Path, **kw: Any) -> DeviceHealth:
    cfg = DeviceHealthSettings(**{"min_sample_interval_seconds": 0, "leak_min_samples": 10,
                                  "leak_min_bytes_per_hour": 100 * MIB, **kw})
    return DeviceHealth(Store(f"sqlite:///{tmp_path / 'h.sqlite'}"), cfg)


def test_only_the_newest_life_is_fit_and_exposure_is_capped_with_flagged_devices_first(tmp_path: Path) -> None:
    h = _health(tmp_path, exposed_devices=2)
    t0 = 1_800_000_000.0
    for i in range(30):
        t = t0 + 10 * i
        # "leaky": 1 GiB/h in its first life, then a restart: flat; "creeping": 400 MiB/h; flat devices
        life, rss = (1.0, 100 * MIB + i * 3 * MIB) if i < 15 else (2.0, 80 * MIB)
        h.observe([], {"device": "leaky", "rss_bytes": rss, "cpu_seconds": i * 0.1, "started_at": life,
                       "sampled_at": t}, now=t)
        h.observe([], {"device": "creeping", "rss_bytes": 50 * MIB + i * 1.1 * MIB, "cpu_seconds": i,
                       "started_at": 1, "sampled_at": t, "host_rss_bytes": "x", "host_cpu_seconds": "1"}, now=t)
        for d in ("flat-a", "flat-b"):
            h.observe([], {"device": d, "rss_bytes": 60 * MIB + (i % 3) * 4096, "cpu_seconds": i * 0.5,
                           "started_at": 1, "sampled_at": t}, now=t)
    h.observe([], {"device": "liar", "rss_bytes": 1, "cpu_seconds": 1, "sampled_at": 9e15}, now=t0 + 300)
    assert h.refresh(t0 + 300, force=True)
    snap = h.snapshot
    by = {(f.device, f.process): f for f in snap.footprints}
    assert by[("leaky", "sidecar")].memory.n == 15 and not by[("leaky", "sidecar")].leak  # the flat second life
    creep = by[("creeping", "sidecar")]
    assert creep.leak and creep.memory.lower > 100 * MIB and creep.memory.slope == pytest.approx(396 * MIB, rel=0.01)
    assert not by[("flat-a", "sidecar")].leak and not by[("flat-b", "sidecar")].leak
    assert h.skipped["malformed"] == 30  # the creeping device's host keys are garbage: counted, not stored
    assert snap.flagged() == ["creeping"] and "creeping" in snap.exposed and len(snap.exposed) == 2
    assert snap.devices == 5
    assert h.store.query("SELECT at FROM device_samples WHERE device = 'liar'") == [(t0 + 300,)]  # its clock ignored
    h.store.close()


def _window(device: str, model: str, start: float, latency: float, rng: np.random.Generator) -> WindowProfile:
    p = WindowProfile(StreamKey.of(model, "1", "default", device, {}), start, start + 60)
    p.update({"a": rng.normal(0, 1, 50)}, {}, latency_ms=rng.gamma(16, latency / 16, 50))
    return p


def test_a_latency_regression_is_named_on_metrics_and_survives_a_restart(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'svc.sqlite'}", port=free_port(),
                               device_health={"min_sample_interval_seconds": 0, "interval_seconds": 0.2},
                               evaluation={"interval_seconds": 0.2})
    t0 = time.time() - 3600
    app = create_app(settings)
    with serving(app, settings) as url:
        for i in range(30):
            for device in ("slow-1", "fine-1"):
                lat = 20.0 if device == "slow-1" and i >= 24 else 10.0
                body = encode_envelope(Envelope([_window(device, "ranker", t0 + 60 * i, lat, rng)],
                                                producer={"name": "test", "device": device}))
                _post(url, "/v1/ingest", body)
        health = app.state.parts.device_health

        def all_windows_fit() -> bool:  # a fit may run mid-ingest: wait for one that saw all 30 windows
            lats = health.snapshot.latencies
            return len(lats) == 2 and all(lat.result.n_baseline + lat.result.n_recent == 30 for lat in lats)

        _until(all_windows_fit, 20)
        text = _get(url, "/metrics")
    regs = metric_samples(text, "driftline_device_latency_regression")
    assert regs == {(("device", "fine-1"), ("model", "ranker")): 0.0, (("device", "slow-1"), ("model", "ranker")): 1.0}
    assert metric_samples(text, "driftline_device_latency_p95_ratio")[(("device", "slow-1"), ("model", "ranker"))] > 1.5

    settings.port = free_port()
    with serving(create_app(settings), settings) as url:  # a restart: the series come back from the store
        regs = metric_samples(_get(url, "/metrics"), "driftline_device_latency_regression")
    assert regs[(("device", "slow-1"), ("model", "ranker"))] == 1.0


# ---- real sidecars, one host process leaking 2 MiB/s ------------------------------------------------
LEAKER = """
import mmap, random, sys, time
rate, page = float(sys.argv[1]), mmap.PAGESIZE
leak = mmap.mmap(-1, 512 << 20)  # virtual only: a page becomes resident when first written
churn = mmap.mmap(-1, 2 << 20)  # 0-2 MiB in use at random, as a heap that grows and shrinks does
rng = random.Random(int(rate))
t0, have, turn = time.monotonic(), 0, 0
print("ready", flush=True)
while True:  # exactly `rate` resident bytes a second leak, one page at a time, under the churn
    want = min(rate * (time.monotonic() - t0), len(leak) - page)
    while have + page <= want:
        leak[have] = 1
        have += page
    turn += 1
    if turn % 20 == 0:
        churn.madvise(mmap.MADV_DONTNEED)
        for at in range(0, rng.randrange(0, len(churn), page), page):
            churn[at] = 1
    time.sleep(0.005)
"""


def _post(url: str, path: str, body: bytes) -> None:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/x-ndjson"
                                                       if path == "/v1/observe" else "application/octet-stream"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status < 300, resp.status
    finally:
        conn.close()


def _get(url: str, path: str) -> str:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def test_the_service_flags_the_device_whose_host_leaks_at_a_known_rate(tmp_path: Path) -> None:
    rate = 2 * MIB  # bytes per second
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'svc.sqlite'}", port=free_port(),
                               evaluation={"interval_seconds": 0.5},
                               device_health={"interval_seconds": 0.5, "min_sample_interval_seconds": 0.5,
                                              "leak_min_samples": 12, "leak_min_bytes_per_hour": 512 * MIB,
                                              "confidence": 0.999})
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    hosts = {"leaky-7": subprocess.Popen([sys.executable, "-c", LEAKER, str(rate)], stdout=subprocess.PIPE),
             "steady-3": subprocess.Popen([sys.executable, "-c", LEAKER, "0"], stdout=subprocess.PIPE)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    app = create_app(settings)
    try:
        with serving(app, settings) as url:
            ports = {}
            for device, host in hosts.items():
                assert host.stdout is not None and host.stdout.readline() == b"ready\n"
                ports[device] = free_port()
                cfg = tmp_path / f"{device}.yaml"
                cfg.write_text(yaml.safe_dump({
                    "device": device, "model": "ranker", "model_version": "1",
                    "window": {"seconds": 1, "lateness_seconds": 0, "tick_seconds": 0.1},
                    "spool": {"path": str(tmp_path / device)}, "api": {"port": ports[device]},
                    "transport": {"http": {"url": url, "timeout_seconds": 5}},
                    "watch_pid": host.pid}))
                procs[device] = subprocess.Popen(
                    [sys.executable, "-m", "driftline.apps.cli.main", "sidecar", "--config", str(cfg)], cwd=REPO,
                    env=base_env, stdout=subprocess.DEVNULL, stderr=(tmp_path / f"{device}.log").open("ab"))
            for device, port in ports.items():
                assert wait_for_port(port, 30), (tmp_path / f"{device}.log").read_text()
            health = app.state.parts.device_health
            rows = "\n".join(json.dumps({"features": {"q": float(i)}, "latency_ms": 2.0}) for i in range(5)).encode()

            def leak_seen() -> Any:
                for port in ports.values():  # traffic, so windows close every second and envelopes carry samples
                    _post(f"http://127.0.0.1:{port}", "/v1/observe", rows)
                by = {(f.device, f.process): f for f in health.snapshot.footprints}
                steady = by.get(("steady-3", "host"))
                leaky = by.get(("leaky-7", "host"))
                time.sleep(0.25)
                return (leaky, steady) if leaky and leaky.leak and steady and steady.memory.n >= 12 else None

            leaky, steady = _until(leak_seen, 35)
            text = _get(url, "/metrics")
    finally:
        for p in [*procs.values(), *hosts.values()]:
            p.kill()
            p.wait(10)
    per_hour = rate * 3600
    assert leaky.memory.lower <= per_hour <= leaky.memory.upper, leaky.memory
    assert not steady.leak and abs(steady.memory.slope) < 0.1 * per_hour, steady.memory
    flags = metric_samples(text, "driftline_device_leak_suspected")
    assert flags[(("device", "leaky-7"), ("process", "host"), ("resource", "memory"))] == 1.0
    assert flags[(("device", "steady-3"), ("process", "host"), ("resource", "memory"))] == 0.0
    slope = metric_samples(text, "driftline_device_memory_slope_bytes_per_hour")[(("device", "leaky-7"), ("process", "host"))]
    assert slope == pytest.approx(per_hour, rel=0.25)


def test_two_replicas_on_postgresql_write_samples_and_only_the_leader_fits(postgres_server: Any) -> None:
    from driftline.service.fleet import Leadership

    url = str(postgres_server.new_database(f"device_health_{int(time.time() * 1000) % 10**8}"))
    cfg = DeviceHealthSettings(min_sample_interval_seconds=0, leak_min_samples=10)
    stores = [Store(url), Store(url)]
    leads = [Leadership(url), Leadership(url)]
    try:
        assert leads[0].check() and not leads[1].check()
        replicas = [DeviceHealth(s, cfg, lead.check) for s, lead in zip(stores, leads, strict=True)]
        t0 = 1_800_000_000.0
        for i in range(30):  # each replica takes every other envelope; a duplicate delivery is one sample
            prod = {"device": "pg-1", "rss_bytes": 10 * MIB + i * 2 * MIB, "cpu_seconds": i, "started_at": 5,
                    "sampled_at": t0 + 60 * i}
            replicas[i % 2].observe([], prod, now=t0 + 60 * i)
            if i % 5 == 0:
                replicas[(i + 1) % 2].observe([], prod, now=t0 + 60 * i)
        assert not replicas[1].refresh(t0 + 1800, force=True) and replicas[1].snapshot.footprints == ()
        assert replicas[0].refresh(t0 + 1800, force=True)
        (fp,) = replicas[0].snapshot.footprints
        assert fp.memory.n == 30 and fp.leak and fp.memory.slope == pytest.approx(120 * MIB, rel=1e-9)
        leads[0].close()  # the leader goes: the other replica takes over with the same samples
        _until(leads[1].check, 20)  # the server ends the old session (and its lock) on its own time
        assert replicas[1].refresh(t0 + 1800, force=True)
        assert replicas[1].snapshot.footprints[0].memory == fp.memory
    finally:
        for lead in leads:
            lead.close()
        for s in stores:
            s.close()


def test_hostile_producer_maps_are_counted_and_bounded(tmp_path: Path) -> None:
    h = _health(tmp_path, max_devices=2, max_queued_samples=5, min_sample_interval_seconds=10)
    now = 1_800_000_000.0
    for bad in ({"rss_bytes": "inf", "cpu_seconds": "1"}, {"rss_bytes": "-5", "cpu_seconds": "1"},
                {"rss_bytes": "12", "cpu_seconds": None}):
        h.observe([], {"device": "d0", **bad}, now=now)
    assert h.skipped["malformed"] == 3
    h.observe([], {"device": "x" * 500, "rss_bytes": 1, "cpu_seconds": 1}, now=now)  # a name past the bound
    for i in range(12):  # 12 devices: the rate-limit table holds max_devices * 4 series, the rest counted
        h.observe([], {"device": f"d{i}", "rss_bytes": 1, "cpu_seconds": 1, "host_rss_bytes": 2,
                       "host_cpu_seconds": 2}, now=now)
    h.observe([], {"device": "d1", "rss_bytes": 1, "cpu_seconds": 1}, now=now + 1)  # too soon after the last
    assert h.skipped["devices"] == 16 and h.skipped["rate"] == 1
    assert h.skipped["queue"] == 3 and h.flush() == 5  # the store was "down": only the newest 5 are held
    h.store.close()
