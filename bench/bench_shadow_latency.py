"""Shadow mirroring's cost on the serving path: the proxy's added latency with mirroring on vs off.

Five processes: a live OIP v2 model server, a shadow model server, a sidecar proxying the live one
with mirroring off, one with mirroring on (every call also sent to the shadow), and this client.
The same OIP ``infer`` call goes, interleaved so machine noise hits all alike, straight to the live
server (the peer), through the proxy without mirroring and through the proxy with mirroring; each
row prints p50/p99 and the p99 added over the direct call. Goal: mirroring on adds <= 1 ms p99, and
adds about nothing over mirroring off. ``--shadow hang`` points the mirror at a server that never
answers (each mirror then waits out its timeout, the queue fills and mirrors are dropped).

Run from the repository root: ``python bench/bench_shadow_latency.py``. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from bench_sidecar import MODEL_SERVER, free_port, pct, stop, wait_port

REPO = Path(__file__).resolve().parents[1]

HANG_SERVER = """
import socket, sys, threading
s = socket.create_server(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
held = []
def accept():
    while True:
        c, _ = s.accept()
        held.append(c)  # read nothing, answer nothing
threading.Thread(target=accept, daemon=True).start()
sys.stdin.read()
"""


def server(code: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    return proc, int(proc.stdout.readline())  # type: ignore[union-attr]


def sidecar(tmp: Path, live: int, shadow: int | None) -> subprocess.Popen[bytes]:
    api, proxy = free_port(), free_port()
    cfg: dict = {
        "device": "bench", "model_version": "1", "spool": {"path": str(tmp / f"spool-{api}")},
        "transport": {"http": {"url": f"http://127.0.0.1:{free_port()}", "timeout_seconds": 1}},
        "shipper": {"backoff_max_seconds": 30, "shutdown_grace_seconds": 0}, "api": {"port": api},
        "proxy": {"enabled": True, "port": proxy, "upstream": f"http://127.0.0.1:{live}"},
    }
    if shadow is not None:
        cfg["proxy"]["shadow"] = {"enabled": True, "upstream": f"http://127.0.0.1:{shadow}", "timeout_seconds": 0.5}
    path = tmp / f"sidecar-{api}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    proc = subprocess.Popen([sys.executable, "-m", "driftline.apps.cli.main", "sidecar", "--config", str(path)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(api)
    wait_port(proxy)
    proc.api_port, proc.proxy_port = api, proxy  # type: ignore[attr-defined]
    return proc


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process so far (Linux /proc), else None. Per call, it moves far less with the
    machine's load than a p99 does: what a change saves shows here first."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def health(proc: subprocess.Popen[bytes]) -> dict:
    c = http.client.HTTPConnection("127.0.0.1", proc.api_port, timeout=5)  # type: ignore[attr-defined]
    c.request("GET", "/healthz")
    out = json.loads(c.getresponse().read())
    c.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--shadow", choices=["model", "hang"], default="model")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f})")
    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        live_p, live = server(MODEL_SERVER)
        shadow_p, shadow = server(MODEL_SERVER if args.shadow == "model" else HANG_SERVER)
        procs += [live_p, shadow_p]
        off = on = None
        try:
            off, on = sidecar(tmp, live, None), sidecar(tmp, live, shadow)
            rng = np.random.default_rng(2)
            body = json.dumps({"id": "r", "inputs": [{"name": "x", "shape": [1, 25], "datatype": "FP32",
                                                      "data": rng.normal(size=25).round(4).tolist()}]}).encode()
            conns = {name: http.client.HTTPConnection("127.0.0.1", port) for name, port in
                     (("direct", live), ("mirroring off", off.proxy_port), ("mirroring on", on.proxy_port))}  # type: ignore[attr-defined]

            def once(conn: http.client.HTTPConnection) -> float:
                t0 = time.perf_counter_ns()
                conn.request("POST", "/v2/models/bench/infer", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 200
                return (time.perf_counter_ns() - t0) / 1000

            for _ in range(300):
                for c in conns.values():
                    once(c)
            times = {name: np.empty(args.requests) for name in conns}
            pids = {"mirroring off": off.pid, "mirroring on": on.pid, "shadow server": shadow_p.pid}
            cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            for i in range(args.requests):
                for name, c in conns.items():
                    times[name][i] = once(c)
            time.sleep(0.5)  # the last mirrors
            cpu1 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            for c in conns.values():
                c.close()
            d99, d50 = pct(times["direct"], 99), pct(times["direct"], 50)
            print(f"proxy latency, {args.requests} OIP infer calls each way (batch 1, 25 FP32 inputs), "
                  f"shadow: {args.shadow}")
            for name, t in times.items():
                added = "" if name == "direct" else (f"   added p50 {pct(t, 50) - d50:6.0f} us   "
                                                      f"p99 {pct(t, 99) - d99:6.0f} us")
                print(f"   {name:14s} p50 {pct(t, 50):7.0f} us   p99 {pct(t, 99):7.0f} us{added}")
            extra = pct(times["mirroring on"], 99) - pct(times["mirroring off"], 99)
            print(f"   mirroring on vs off: p99 {extra:+.0f} us "
                  f"(ratio {pct(times['mirroring on'], 99) / pct(times['mirroring off'], 99):.2f}); "
                  "goal: added p99 with mirroring on <= 1000 us")
            cpu = {name: (b - a) / args.requests * 1e6 for name, (a, b) in
                   ((n, (cpu0[n], cpu1[n])) for n in pids) if a is not None and b is not None}
            if cpu:
                print("   CPU per call: " + ", ".join(f"{name} {us:.0f} us" for name, us in cpu.items()))
            time.sleep(0.5)
            h = health(on)["shadow"]
            print(f"   mirrored: {h['mirrored']}, dropped {h['dropped']}, queued {h['queued']}; "
                  f"load average at the end {os.getloadavg()[0]:.1f} (p99 moves with it: compare runs at low load)")
        finally:
            for p in (off, on):
                if p is not None:
                    stop(p)
            for p in procs:
                p.stdin.close()  # type: ignore[union-attr]
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()
