"""Ingest rate of whole service processes from Kafka: SQLite, PostgreSQL, and two replicas on PostgreSQL.

Issue 22 asks for measured figures to size a deployment. This starts the real parts on loopback (a
Kafka 4.1.1 broker, PostgreSQL 15, ``driftline service`` processes), writes ``--envelopes`` envelopes
of 50 features (one window each, 100 rows, from 200 devices of 20 models) to a topic with
``--partitions`` partitions *before* any consumer starts, and then times how fast the service
processes drain it into the store: from the first stored window (with two replicas, from the
moment both have stored one: the second to join waits for the group's rebalance) to the last one,
polled through ``GET /v1/models``. Each configuration consumes the same topic with its own consumer group into a
fresh database, in the same run:

* one replica into SQLite (the embedded default),
* one replica into PostgreSQL,
* two replicas (one consumer group) into PostgreSQL.

The machine's cores are shared by the broker, the database and the replicas, so the two-replica
figure on a two-core machine says what a second replica buys when nothing else is added. It prints
a table and, with ``--json``, the figures for docs/operations.md's sizing table. Not a test.

Run: ``python bench/bench_scaleout.py [--envelopes 20000] [--partitions 4]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from driftline.profile import StreamKey, WindowProfile  # noqa: E402
from driftline.wire import Envelope, encode_envelope  # noqa: E402
from tests.harness.kafka import KafkaBroker  # noqa: E402
from tests.harness.ports import free_port  # noqa: E402
from tests.harness.postgres import PostgresServer  # noqa: E402

FEATURES = 50


def envelopes(n: int) -> tuple[list[tuple[bytes, bytes]], int]:
    """``n`` single-window envelopes (keys spread a model's devices over partitions) and their mean size."""
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(FEATURES)]
    base = 1_900_000_000.0
    out = []
    for i in range(n):
        model, device = f"model-{i % 20}", f"dev-{i % 200}"
        p = WindowProfile(StreamKey.of(model, "v1", "baseline", device), base + 60 * (i // 200), base + 60 * (i // 200) + 60)
        p.update(rng.normal(size=(100, FEATURES)), feature_names=names)
        out.append((f"{model}/{device}".encode(), encode_envelope(Envelope([p], producer={"device": device}))))
    return out, int(sum(len(v) for _, v in out) / max(n, 1))


def produce(broker: KafkaBroker, topic: str, payloads: list[tuple[bytes, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=20,
                             max_request_size=8 << 20, batch_size=1 << 20)
    for key, value in payloads:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def _driftline() -> str:
    """The ``driftline`` console script of this interpreter's environment."""
    import shutil

    here = Path(sys.executable).parent / "driftline"
    return str(here) if here.exists() else (shutil.which("driftline") or "driftline")


def stored_windows(port: int) -> int:
    import httpx

    try:
        r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10)
        return sum(m["windows"] for m in r.json()["models"])
    except (httpx.HTTPError, ValueError, KeyError):
        return -1


def accepted(port: int) -> float:
    """Envelopes this replica has stored (its own ``driftline_ingest_envelopes_total``), -1 if it does not answer."""
    import httpx

    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except httpx.HTTPError:
        return -1.0
    for line in text.splitlines():
        if line.startswith('driftline_ingest_envelopes_total{result="accepted",transport="kafka"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def drain(label: str, database_url: str, broker: KafkaBroker, topic: str, n: int, replicas: int,
          tmp: Path, timeout: float) -> dict[str, float | int | str]:
    """Start ``replicas`` service processes on one new consumer group; time the drain of the topic."""
    group = f"bench-{label}-{time.time_ns()}"
    procs, ports = [], []
    for r in range(replicas):
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
        env.update({
            "DRIFTLINE_DATABASE_URL": database_url, "DRIFTLINE_PORT": str(port),
            "DRIFTLINE_KAFKA__ENABLED": "true", "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": f'["{broker.bootstrap}"]',
            "DRIFTLINE_KAFKA__TOPIC": topic, "DRIFTLINE_KAFKA__GROUP_ID": group,
            "DRIFTLINE_KAFKA__MAX_POLL_RECORDS": "500", "DRIFTLINE_EVALUATION__INTERVAL_SECONDS": "3600",
            "DRIFTLINE_LIMITS__MAX_MODELS": "100", "DRIFTLINE_LOG_FORMAT": "text",
        })
        log = (tmp / f"{label}-{r}.log").open("w")
        procs.append(subprocess.Popen([_driftline(), "service"], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, cwd=tmp))
        ports.append(port)
    t0 = time.monotonic()
    first: tuple[float, int] | None = None
    done, now = 0, t0
    try:
        while True:
            done = stored_windows(ports[0])
            now = time.monotonic()
            # the steady state starts when every replica stores: a replica that joins while another is
            # already draining waits for the group's rebalance first, which is start-up, not throughput
            if first is None and done > 0 and (replicas == 1 or all(accepted(p) > 0 for p in ports)):
                first = (now, done)
            if done >= n or now - t0 > timeout:
                break
            time.sleep(0.1)
    finally:
        cpu = []
        for p in procs:
            try:
                with open(f"/proc/{p.pid}/stat") as fh:
                    f = fh.read().rsplit(")", 1)[1].split()
                cpu.append((int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"))
            except OSError:
                cpu.append(float("nan"))
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    rate = (done - first[1]) / (now - first[0]) if first and now > first[0] else float("nan")
    return {"config": label, "replicas": replicas, "stored": done, "envelopes_per_s": round(rate, 1),
            "startup_s": round(first[0] - t0, 1) if first else float("nan"),
            "service_cpu_s": round(sum(cpu), 1), "complete": done >= n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envelopes", type=int, default=20_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per configuration")
    ap.add_argument("--only", default="sqlite,postgres,postgres-x2", help="comma-separated configurations")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()
    payloads, mean_bytes = envelopes(args.envelopes)
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        broker = KafkaBroker(tmp / "kafka").start()
        pg = PostgresServer(tmp / "pg").start() if only & {"postgres", "postgres-x2"} else None
        results = []
        try:
            topic = "bench-scaleout"
            broker.create_topic(topic, partitions=args.partitions)
            produce(broker, topic, payloads)
            print(f"{args.envelopes:,} envelopes of {FEATURES} features ({mean_bytes:,} bytes each) on "
                  f"{args.partitions} partitions; load {os.getloadavg()[0]:.1f}", flush=True)
            plan = [("sqlite", 1), ("postgres", 1), ("postgres-x2", 2)]
            for label, replicas in plan:
                if label not in only:
                    continue
                url = f"sqlite:///{tmp / (label + '.sqlite')}" if label == "sqlite" else pg.new_database("bench_" + label.replace("-", "_"))
                res = drain(label, url, broker, topic, args.envelopes, replicas, tmp, args.timeout)
                results.append(res)
                print(f"  {label:<12} {replicas} replica(s): {res['envelopes_per_s']:>8,.0f} envelopes/s "
                      f"(start-up {res['startup_s']} s, service CPU {res['service_cpu_s']} s, "
                      f"{'all' if res['complete'] else 'NOT all'} {res['stored']:,} stored)", flush=True)
        finally:
            broker.stop()
            if pg is not None:
                pg.stop()
    by = {r["config"]: r for r in results}
    if "postgres" in by and "postgres-x2" in by:
        print(f"two replicas / one replica on PostgreSQL: {by['postgres-x2']['envelopes_per_s'] / by['postgres']['envelopes_per_s']:.2f}x")
    if args.json:
        print(json.dumps({"envelope_bytes": mean_bytes, "features": FEATURES, "results": results}))


if __name__ == "__main__":
    main()
