"""The fault results of the whole pipeline: ``tests/test_system.py`` run once, as a table for the docs.

The assertions live in ``tests/test_system.py`` (20 sidecar processes, Kafka 4.1.1, two service
replicas on PostgreSQL 15, Prometheus and Alertmanager; one fault per test while traffic flows; after
each, every acknowledged row is stored exactly once, drift equals a clean run on the same rows, and
exactly the expected alerts fire). This script runs that file as a whole process and prints, per
fault, whether it held, how long the test took, how many rows the fleet had acknowledged by then, how
long the pipeline took to store every acknowledged row once after the feeder stopped (the drain), and
the alerts that fired. The peer is the steady phase's drain: the same check with no fault.

Not a test itself. Needs what ``tests/test_system.py`` needs (root for the tmpfs mounts, the Kafka
jars, the Debian packages of ``scripts/test.sh --setup-only``).

Run: ``python bench/bench_faults.py [--outage 15]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--outage", type=float, default=15.0, help="seconds the broker is cut off (SIGSTOP)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="driftline-faults-") as tmp:
        report, junit = Path(tmp) / "phases.jsonl", Path(tmp) / "junit.xml"
        env = {**os.environ, "DRIFTLINE_SYSTEM_REPORT": str(report),
               "DRIFTLINE_SYSTEM_OUTAGE_SECONDS": str(args.outage)}
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_system.py",
                               f"--junitxml={junit}", f"--basetemp={Path(tmp) / 'run'}"], cwd=REPO, env=env,
                              capture_output=True, text=True, check=False)
        wall = time.monotonic() - t0
        outcomes: dict[str, tuple[str, float]] = {}
        if junit.exists():
            for case in ET.parse(junit).getroot().iter("testcase"):
                failed = case.find("failure") is not None or case.find("error") is not None
                skipped = case.find("skipped") is not None
                outcomes[case.get("name", "")] = ("FAILED" if failed else "skipped" if skipped else "held",
                                                  float(case.get("time", "nan")))
        phases = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    print(f"tests/test_system.py, broker outage {args.outage:.0f} s: {wall:.0f} s in all (fleet start-up included)")
    print()
    print("| fault (test) | result | test time | rows acknowledged so far | drain after the feeder stops "
          "| alerts that fired |")
    print("|---|---|---|---|---|---|")
    steady = None
    for ph in phases:
        name = ph["test"]
        result, secs = outcomes.get(name, ("?", ph.get("seconds", float("nan"))))
        drain = ph.get("drain_seconds")
        if name.startswith("test_steady") and drain is not None:
            steady = drain
        alerts = ", ".join(ph.get("alerts_firing", [])) or "none"
        rows = ph.get("rows_acknowledged")
        rows_s = f"{rows:,}" if rows is not None else "-"
        drain_s = f"{drain} s" if drain is not None else "-"
        print(f"| {name.removeprefix('test_').replace('_', ' ')} | {result} | {secs:.0f} s | {rows_s} | {drain_s} "
              f"| {alerts} |")
    for name, (result, secs) in outcomes.items():
        if not any(ph["test"] == name for ph in phases):
            print(f"| {name.removeprefix('test_').replace('_', ' ')} | {result} | {secs:.0f} s | - | - | - |")
    if steady is not None:
        print(f"\npeer: the steady phase (no fault) drained in {steady} s; a fault's drain beyond that is its recovery")
    held = sum(1 for r, _ in outcomes.values() if r == "held")
    print(f"{held} of {len(outcomes)} faults held (pytest exit {proc.returncode})")
    if proc.returncode:
        print("\n[pytest, last lines]\n" + "\n".join(proc.stdout.rstrip().splitlines()[-25:]))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
