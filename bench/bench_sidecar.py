"""Edge sidecar costs, each next to its natural peer measured in the same run.

1. SDK batch throughput: ``Monitor.observe`` on 20 numeric + 5 categorical columns, in feature
   values per second on one core, next to ``WindowProfile.update`` (the core alone).
   Goal: >= 10 million values/s.
2. Single-row ``observe()`` cost, p50/p99/p99.9, while the background thread folds; and the rate
   at which that thread folds single rows. Goal: p99 <= 20 us.
3. Proxy added latency: OIP v2 ``infer`` calls straight to a model server and through the sidecar's
   proxy (three processes: model server, sidecar, this client), p50/p99 of each and the difference.
   Goal: p99 added <= 1 ms.
4. Sidecar RSS at 100 features: ``driftline sidecar`` idle, then after 100-feature rows arrived through
   its local API. Goal: <= 150 MB.

Run from the repository root: ``python bench/bench_sidecar.py``. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from driftline.edge_sidecar.monitor import Monitor
from driftline.profile import StreamKey, WindowProfile

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q))


# ---- 1. batch throughput ----------------------------------------------------------------------------
def bench_batch(rows: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    data = {f"num_{i}": rng.normal(size=rows) for i in range(20)}
    data.update({f"cat_{i}": rng.choice([f"value-{j}" for j in range(25)], rows) for i in range(5)})
    values = rows * 25
    monitor = Monitor.configure(model="bench", model_version="1", background=False, window_seconds=3600, max_rows=10**12)
    monitor.observe(data)
    t_sdk = best_of(lambda: monitor.observe(data), repeats)
    t_core = best_of(lambda: WindowProfile(StreamKey.of("b", "1"), 0, 60).update(data), repeats)
    print(f"1. SDK batch throughput, {rows} rows x (20 numeric + 5 categorical), best of {repeats}")
    print(f"   Monitor.observe (batch)        {values / t_sdk / 1e6:8.1f} M values/s/core   (goal >= 10)")
    print(f"   WindowProfile.update (core)    {values / t_core / 1e6:8.1f} M values/s/core")
    print(f"   ratio SDK/core time            {t_sdk / t_core:8.2f}x")
    monitor.close(flush=False)


# ---- 2. single rows ---------------------------------------------------------------------------------
def bench_single(calls: int) -> None:
    rng = np.random.default_rng(1)
    rows = [{**{f"num_{i}": float(rng.normal()) for i in range(20)},
             **{f"cat_{i}": f"value-{int(rng.integers(25))}" for i in range(5)}} for _ in range(1000)]
    monitor = Monitor.configure(model="bench", model_version="1", window_seconds=3600, max_rows=10**12).start()
    lat = np.empty(calls, dtype=np.int64)
    clock = time.perf_counter_ns
    observe = monitor.observe
    for i in range(calls):
        row = rows[i % 1000]
        t0 = clock()
        observe(row, 0.5, request_id=i, latency_ms=3.0)
        lat[i] = clock() - t0
    backlog = monitor.buffered_rows
    t0 = time.perf_counter()
    monitor.flush()
    drain = time.perf_counter() - t0
    snap = monitor.snapshot()
    monitor.close(flush=False)
    us = lat / 1000
    print(f"2. single-row observe(), {calls} calls of 25 features, background folding on")
    print(f"   p50 {pct(us, 50):6.2f} us   p99 {pct(us, 99):6.2f} us   p99.9 {pct(us, 99.9):7.2f} us   "
          f"(goal p99 <= 20 us)")
    print(f"   rows observed {sum(snap['observed'].values())}, shed under overload {snap['shed_rows']}, "
          f"backlog after the last call {backlog} rows ({drain * 1000:.0f} ms to fold)")
    # Folding rate of the background thread on its own.
    m2 = Monitor.configure(model="bench", model_version="1", background=False, window_seconds=3600, max_rows=10**12,
                           max_buffer_rows=10**7)
    for i in range(50_000):
        m2.observe_row(rows[i % 1000], 0.5)
    t_fold = best_of(m2.flush, 1)
    print(f"   background fold rate           {50_000 / t_fold / 1e3:8.1f} k rows/s ({50_000 * 25 / t_fold / 1e6:.1f} "
          f"M values/s)")
    m2.close(flush=False)


# ---- processes for 3 and 4 ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


MODEL_SERVER = """
import sys
from tests.sidecar_support import ModelServer
ms = ModelServer().start()
print(ms.port, flush=True)
sys.stdin.read()
ms.stop()
"""


def start_sidecar(tmp: Path, api_port: int, proxy_upstream: str | None) -> subprocess.Popen[bytes]:
    cfg = {
        "device": "bench", "model_version": "1",
        "spool": {"path": str(tmp / "spool")},
        "transport": {"http": {"url": f"http://127.0.0.1:{free_port()}", "timeout_seconds": 1}},
        "shipper": {"backoff_max_seconds": 30, "shutdown_grace_seconds": 0},
        "api": {"port": api_port},
    }
    proxy_port = None
    if proxy_upstream:
        proxy_port = free_port()
        cfg["proxy"] = {"enabled": True, "port": proxy_port, "upstream": proxy_upstream}
    path = tmp / f"sidecar-{api_port}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    proc = subprocess.Popen([sys.executable, "-m", "driftline.apps.cli.main", "sidecar", "--config", str(path)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(api_port)
    proc.api_port = api_port  # type: ignore[attr-defined]
    if proxy_port:
        wait_port(proxy_port)
        proc.proxy_port = proxy_port  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def rss(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            k, v = line.split(":")
            fields[k] = int(v.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


# ---- 3. proxy latency -----------------------------------------------------------------------------
def bench_proxy(requests: int, tmp: Path) -> None:
    ms = subprocess.Popen([sys.executable, "-c", MODEL_SERVER], cwd=REPO, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    try:
        ms_port = int(ms.stdout.readline())  # type: ignore[union-attr]
        sc = start_sidecar(tmp, free_port(), f"http://127.0.0.1:{ms_port}")
        try:
            rng = np.random.default_rng(2)
            body = json.dumps({"id": "r", "inputs": [{"name": "x", "shape": [1, 25], "datatype": "FP32",
                                                      "data": rng.normal(size=25).round(4).tolist()}]}).encode()
            direct = http.client.HTTPConnection("127.0.0.1", ms_port)
            proxied = http.client.HTTPConnection("127.0.0.1", sc.proxy_port)  # type: ignore[attr-defined]

            def once(conn: http.client.HTTPConnection) -> float:
                t0 = time.perf_counter_ns()
                conn.request("POST", "/v2/models/bench/infer", body=body,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 200
                return (time.perf_counter_ns() - t0) / 1000

            for _ in range(300):
                once(direct)
                once(proxied)
            d, p = np.empty(requests), np.empty(requests)
            for i in range(requests):  # interleaved, so machine noise hits both alike
                d[i] = once(direct)
                p[i] = once(proxied)
            direct.close()
            proxied.close()
            print(f"3. proxy added latency, {requests} OIP infer calls each way (batch 1, 25 FP32 inputs), "
                  "3 processes")
            print(f"   direct      p50 {pct(d, 50):7.0f} us   p99 {pct(d, 99):7.0f} us")
            print(f"   via proxy   p50 {pct(p, 50):7.0f} us   p99 {pct(p, 99):7.0f} us")
            print(f"   added       p50 {pct(p, 50) - pct(d, 50):7.0f} us   p99 {pct(p, 99) - pct(d, 99):7.0f} us"
                  "   (goal p99 <= 1000 us)")
            time.sleep(1.0)
            h = json.loads(_get(sc, "/healthz"))
            print(f"   captured by the sidecar: {h['proxy']['captured']} of {h['proxy']['requests']['ok']} proxied "
                  f"calls; rows observed {h['observed_rows']}")
        finally:
            stop(sc)
    finally:
        ms.stdin.close()  # type: ignore[union-attr]
        ms.wait(10)


def _get(proc: subprocess.Popen[bytes], path: str) -> bytes:
    port = proc.api_port  # type: ignore[attr-defined]
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    return c.getresponse().read()


# ---- 4. RSS at 100 features ------------------------------------------------------------------------
def bench_rss(tmp: Path, rows: int) -> None:
    port = free_port()
    sc = start_sidecar(tmp, port, None)
    try:
        time.sleep(1.0)
        idle = rss(sc.pid)
        rng = np.random.default_rng(3)
        sent = 0
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while sent < rows:
            batch = []
            for j in range(500):
                feats = {f"f{i:03d}": round(float(v), 4) for i, v in enumerate(rng.normal(size=90))}
                feats.update({f"c{i}": f"v{int(rng.integers(50))}" for i in range(10)})
                batch.append({"model": f"model-{j % 4}", "features": feats, "outputs": {"p": float(rng.random())}})
            payload = "\n".join(json.dumps(r) for r in batch).encode()
            conn.request("POST", "/v1/observe", body=payload, headers={"Content-Type": "application/x-ndjson"})
            assert conn.getresponse().read()
            sent += len(batch)
        conn.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            h = json.loads(_get(sc, "/healthz"))
            if h["buffered_rows"] == 0 and h["observed_rows"] == sent:
                break
            time.sleep(0.2)
        loaded = rss(sc.pid)
        print(f"4. sidecar RSS, 100 features (90 numeric + 10 categorical), 4 models, {sent} rows via the local API")
        print(f"   idle                  RSS {idle[0]:6.1f} MB")
        print(f"   after the rows        RSS {loaded[0]:6.1f} MB   peak (VmHWM) {loaded[1]:6.1f} MB   "
              "(goal <= 150 MB)")
    finally:
        stop(sc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rss-rows", type=int, default=50_000)
    ap.add_argument("--only", choices=["batch", "single", "proxy", "rss"])
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs "
          f"(load average {os.getloadavg()[0]:.1f})")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.only in (None, "batch"):
            bench_batch(args.rows, args.repeats)
        if args.only in (None, "single"):
            bench_single(args.calls)
        if args.only in (None, "proxy"):
            bench_proxy(args.requests, tmp)
        if args.only in (None, "rss"):
            bench_rss(tmp, args.rss_rows)


if __name__ == "__main__":
    main()
