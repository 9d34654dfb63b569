"""The whole pipeline under load: the highest steady rate it keeps up with on this machine, and what each part costs.

Starts the real parts on loopback with ``tests/harness/system.py`` (``--sidecars`` ``driftline sidecar``
processes, a Kafka 4.1.1 broker, two ``driftline service`` replicas in one consumer group on
PostgreSQL 15, Prometheus and Alertmanager) and feeds every sidecar's ``/v1/observe`` at a series of
rising rates (NDJSON posts of ``rows`` rows, twice a second per sidecar). Each level runs
``--seconds`` seconds. During a level the lag (rows acknowledged by the sidecars minus rows stored by
the service, read from PostgreSQL) is sampled every second; a level *keeps up* when the acknowledged
rate is within 10% of the offered rate and the lag's least-squares slope over the second half of the
level is below 2% of the rate (it does not grow). Per level it prints the rates, the lag's slope, and
each part's CPU (cores used, from ``/proc``) and resident memory. The peer measured in the same run is
the raw data itself: the NDJSON bytes the sidecars acknowledged against the bytes the level added to
the Kafka topic's log (envelopes of window sketches), per observation.

Not a test (``tests/test_system.py`` holds the assertions). Needs root for the tmpfs mounts (or
``--no-tmpfs``), the Kafka jars and the Debian packages of ``scripts/test.sh --setup-only``.

Run: ``python bench/bench_system.py [--sidecars 20] [--rows 50,200,800,2000] [--seconds 30]
[--outage 180]``. With ``--outage S`` it also cuts the broker off (SIGSTOP) for S seconds at the lowest
rate and reports how long the fleet took to deliver the backlog and that every row arrived once.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.kafka import KafkaBroker  # noqa: E402
from tests.harness.prometheus import find_prometheus_binaries  # noqa: E402
from tests.harness.system import Feeder, System  # noqa: E402


def _slope(ts: list[float], ys: list[float]) -> float:
    if len(ts) < 3:
        return float("nan")
    t = np.asarray(ts) - ts[0]
    return float(np.polyfit(t, np.asarray(ys, dtype=float), 1)[0])


def _topic_bytes(system: System) -> int:
    """Bytes in the broker's log segments of the fleet's topic (every partition)."""
    total = 0
    for part in system.broker.data_dir.glob(f"{system.topic}-*"):
        total += sum(f.stat().st_size for f in part.glob("*.log"))
    return total


def _usage(system: System) -> dict[str, tuple[float, int]]:
    return system.cpu_and_rss()


def _group(name: str) -> str:
    return "sidecars" if name.startswith("dev-") else ("replicas" if name.startswith("replica") else name)


def level(system: System, rows: int, seconds: float, interval: float) -> dict[str, object]:
    """One load level: feed, sample the lag each second, then measure the parts' CPU and memory."""
    assert system.feeder is not None
    system.checkpoint()  # start from a drained, stopped fleet
    feeder = Feeder(system.sidecars, rows, interval, threads=4, reuse_payloads=True)
    feeder.acked = dict(system.feeder.acked)  # the stored totals include earlier levels
    base_stored = sum(system.stored_rows().values())
    base_acked = sum(feeder.acked.values())
    before = _usage(system)
    bytes_before = _topic_bytes(system)
    acked_before = feeder.snapshot()
    t0 = time.monotonic()
    feeder.start()
    ts, lags = [], []
    try:
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            acked = sum(feeder.snapshot().values()) - base_acked
            stored = sum(system.stored_rows().values()) - base_stored
            ts.append(time.monotonic() - t0)
            lags.append(acked - stored)
    finally:
        feeder.stop()
    elapsed = time.monotonic() - t0
    after = _usage(system)
    acked_total = sum(feeder.snapshot().values()) - base_acked
    offered = rows * len(system.sidecars) / interval
    achieved = acked_total / elapsed
    half = len(ts) // 2
    slope = _slope(ts[half:], lags[half:])
    cpu: dict[str, float] = {}
    rss: dict[str, int] = {}
    for name, (c1, r1) in after.items():
        c0 = before.get(name, (c1, r1))[0]
        g = _group(name)
        cpu[g] = cpu.get(g, 0.0) + (c1 - c0) / elapsed
        rss[g] = rss.get(g, 0) + r1
    system.feeder.acked = feeder.snapshot()  # so the next checkpoint expects these rows too
    system.checkpoint(timeout=300)  # every row of the level on the topic (and stored) before its bytes are read
    wire = _topic_bytes(system) - bytes_before
    raw = sum((n - acked_before.get(d, 0)) * len(feeder._payloads[d]) / rows  # noqa: SLF001 - the bench's own feeder
              for d, n in feeder.snapshot().items() if d in feeder._payloads)  # noqa: SLF001
    return {"raw_bytes": raw, "wire_bytes": wire, "acked_rows": acked_total, "rows_per_post": rows, "offered": offered, "achieved": achieved, "lag_end": lags[-1] if lags else 0,
            "lag_slope": slope, "keeps_up": achieved >= 0.9 * offered and slope < 0.02 * offered,
            "cpu": cpu, "rss": rss}


def outage(system: System, seconds: float) -> dict[str, float]:
    """Cut the broker off at the running rate, restore it, and time the delivery of the backlog."""
    system.resume()
    time.sleep(3)
    system.pause_broker()
    try:
        time.sleep(seconds)
    finally:
        system.resume_broker()
    t0 = time.monotonic()
    system.checkpoint(timeout=max(300.0, seconds * 2))
    return {"outage_s": seconds, "backlog_delivered_s": time.monotonic() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sidecars", type=int, default=20)
    ap.add_argument("--rows", default="50,200,800,2000", help="rows per post, one level each (2 posts/s/sidecar)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each level")
    ap.add_argument("--outage", type=float, default=0.0, help="also cut the broker off this long (seconds)")
    ap.add_argument("--no-tmpfs", action="store_true", help="no tmpfs mounts (no root needed)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-system-"))
    broker = KafkaBroker(root / "kafka").start()
    tmpfs = not args.no_tmpfs
    system = System(root / "system", broker, find_prometheus_binaries(), sidecars=args.sidecars,
                    tmpfs_spool_sidecars=1 if tmpfs else 0, db_on_tmpfs=tmpfs)
    t0 = time.monotonic()
    results = []
    try:
        system.start()
        print(f"started {args.sidecars} sidecars, broker, 2 replicas, PostgreSQL, Prometheus, Alertmanager "
              f"in {time.monotonic() - t0:.0f} s")
        if args.outage:
            o = outage(system, args.outage)
            print(f"broker cut off for {o['outage_s']:.0f} s: backlog delivered {o['backlog_delivered_s']:.1f} s after "
                  "it came back; every acknowledged row stored exactly once")
        for rows in [int(x) for x in args.rows.split(",") if x]:
            r = level(system, rows, args.seconds, 0.5)
            results.append(r)
            cpu = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["cpu"].items()))  # type: ignore[union-attr]
            rss = ", ".join(f"{k} {v / 2**20:.0f} MB" for k, v in sorted(r["rss"].items()))  # type: ignore[union-attr]
            print(f"{rows:>5} rows/post: offered {r['offered']:>9,.0f} rows/s, acknowledged {r['achieved']:>9,.0f}/s, "
                  f"lag slope {r['lag_slope']:+,.0f} rows/s, lag at end {r['lag_end']:,} rows -> "
                  f"{'keeps up' if r['keeps_up'] else 'falls behind'}")
            print(f"      CPU (cores): {cpu}")
            print(f"      RSS: {rss}")
            acked_rows = r["acked_rows"]
            if r["wire_bytes"] and acked_rows:
                print(f"      bytes per observation: raw NDJSON {r['raw_bytes'] / acked_rows:,.1f}, on Kafka "
                      f"{r['wire_bytes'] / acked_rows:,.2f} ({r['raw_bytes'] / r['wire_bytes']:,.0f}x fewer)")
        system.checkpoint(timeout=600)
        print("after the last level: every acknowledged row stored exactly once")
        kept = [r for r in results if r["keeps_up"]]
        if kept:
            best = max(kept, key=lambda r: r["achieved"])  # type: ignore[arg-type, return-value]
            print(f"highest steady rate kept up with: {best['achieved']:,.0f} observations/s "
                  f"({args.sidecars} sidecars, {best['rows_per_post']} rows per post)")
        else:
            print("no level was kept up with")
    finally:
        system.stop()
        broker.stop()


if __name__ == "__main__":
    main()
