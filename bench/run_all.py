"""Run every ``bench/`` script and write what each printed into ``docs/benchmarks.md``.

Every benchmark in ``bench/`` times Driftline next to a peer measured in the same run (Evidently, raw
DataSketches, a direct call to the upstream, pandas, NannyML, ...) and prints its own figures and
ratios. This script is the one command that regenerates the page: it runs each script as a whole
process, in order, with the arguments listed in ``BENCHES`` (the defaults a reviewer would run), and
writes the page with the machine it ran on, the commit, each command, its wall time and its output
verbatim. A script that fails or times out is written down as failed with its last lines; the page is
never silently partial. Nothing here is a test: the figures are for reading and for the docs.

Run: ``python bench/run_all.py [--only NAME,...] [--quick] [--out docs/benchmarks.md]``
(``--quick`` uses small sizes to check that every script still runs; its figures are not the ones to
quote). Needs the ``all`` extra, the Kafka jars (``scripts/fetch-kafka.sh``) and PostgreSQL for the
service benchmarks, and, for the NannyML comparisons, NannyML in its own environment at ``.nannyml-venv``
(``python -m venv .nannyml-venv && .nannyml-venv/bin/pip install nannyml statsmodels``: it would change
packages the tests use).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Bench:
    """One benchmark script: what it compares, the arguments to quote figures from, quick ones to smoke it."""

    name: str
    script: str
    compares: str
    args: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    timeout_s: float = 1800.0
    tags: tuple[str, ...] = field(default=())


BENCHES: tuple[Bench, ...] = (
    Bench("drift_vs_evidently", "bench_drift_vs_evidently.py",
          "`driftline drift` from CSV and Parquet vs Evidently's DataDriftPreset and a pyarrow + raw KLL floor",
          quick=("--rows", "50000")),
    Bench("profile", "bench_profile.py", "WindowProfile.update vs raw vector KLL; envelope bytes vs JSON",
          quick=("--rows", "20000", "--size-rows", "100000", "--repeats", "2")),
    Bench("sidecar", "bench_sidecar.py", "SDK and proxy costs vs the core alone and a direct upstream call",
          quick=("--rows", "20000", "--calls", "20000", "--requests", "300", "--rss-rows", "5000", "--repeats", "2")),
    Bench("sidecar_judge", "bench_sidecar_judge.py", "judging drift on the device: CPU per window, memory",
          quick=("--windows", "5")),
    Bench("service", "bench_service.py", "Kafka ingest, drift at 1,000 features, /metrics at 10k series and at the caps",
          args=("--repeat", "3"), quick=("--envelopes", "1200")),
    Bench("scaleout", "bench_scaleout.py", "whole service processes draining Kafka: SQLite, PostgreSQL, two replicas",
          args=("--envelopes", "10000"), quick=("--envelopes", "400")),
    Bench("wire_hostile", "bench_wire_hostile.py", "hostile and large envelopes: time and memory per input"),
    Bench("stats_accuracy", "bench_stats_accuracy.py", "sketch scores vs exact scores on the raw data",
          quick=("--seeds", "2")),
    Bench("stats_verdicts", "bench_stats_verdicts.py", "Driftline's default verdicts vs Evidently's on labelled cases",
          quick=("--max-rows", "20000")),
    Bench("spark", "bench_spark.py", "driftline.spark in local mode vs the single-process build",
          quick=("--rows", "50000")),
    Bench("shadow_latency", "bench_shadow_latency.py", "the proxy's added latency with shadow mirroring on and off "
          "vs direct calls to the model server", quick=("--requests", "300")),
    Bench("label_join", "bench_label_join.py", "joining delayed labels (labels/s/core, memory at the horizon) vs a "
          "pandas merge", quick=("--pending", "20000")),
    Bench("cbpe_vs_nannyml", "bench_cbpe_vs_nannyml.py", "label-free performance estimates vs NannyML's CBPE on the "
          "same files (NannyML in .nannyml-venv)", quick=("--chunks", "3", "--reference-rows", "5000")),
    Bench("reconstruction_vs_nannyml", "bench_reconstruction_vs_nannyml.py", "multivariate drift by reconstruction vs "
          "NannyML's DataReconstructionDriftCalculator (NannyML in .nannyml-venv)",
          quick=("--ref-chunks", "5", "--seg-chunks", "3")),
    Bench("device_health", "bench_device_health.py", "leak and latency trends for a fleet vs scipy's theilslopes"),
    Bench("system", "bench_system.py", "the whole pipeline (20 sidecars, Kafka, 2 replicas, PostgreSQL): the highest "
          "steady rate without growing lag, each part's CPU and memory, a broker outage's backlog",
          args=("--outage", "120", "--seconds", "20"), quick=("--sidecars", "4", "--rows", "50,200", "--seconds", "10")),
    Bench("faults", "bench_faults.py", "the whole pipeline under each fault of tests/test_system.py: exactly once, "
          "drift as a clean run, the expected alerts; drain time against the steady phase's", quick=("--outage", "10")),
)


@dataclass(frozen=True)
class Outcome:
    """What one run of one script gave: its exit status, wall time and output."""

    bench: Bench
    command: str
    returncode: int | None
    seconds: float
    output: str


def _run(b: Bench, quick: bool) -> Outcome:
    args = b.quick if quick else b.args
    cmd = [sys.executable, str(REPO / "bench" / b.script), *args]
    shown = " ".join(["python", f"bench/{b.script}", *map(shlex.quote, args)])
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=b.timeout_s, check=False)
        rc: int | None = proc.returncode
        out = proc.stdout + (f"\n[stderr, last lines]\n{_tail(proc.stderr)}" if proc.returncode else "")
    except subprocess.TimeoutExpired as exc:
        rc = None
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        out += f"\n[timed out after {b.timeout_s:.0f} s]"
    return Outcome(b, shown, rc, time.monotonic() - t0, out.rstrip())


def _tail(text: str, n: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


def _machine() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=False).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True, check=False).stdout.strip()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return (f"commit `{commit}`{' (with uncommitted changes)' if dirty else ''}; {os.cpu_count()} cores{mem}; "
            f"{platform.system()} {platform.release()}; Python {platform.python_version()}; "
            f"load average {load:.2f} at the start")


def render(outcomes: list[Outcome], machine: str, started: str, quick: bool) -> str:
    """The page: a summary table, then each script's command and output verbatim."""
    lines = [
        "# Benchmarks",
        "",
        "Written by `python bench/run_all.py`; do not edit by hand (run it again instead). Every script",
        "measures Driftline next to its peer in the same run, so the ratios hold on a slower or busier",
        "machine better than the absolute times do. Goals are printed by the scripts themselves.",
        "",
        f"Run started {started} on {machine}.",
        "",
    ]
    if quick:
        lines += ["**Quick run** (small sizes, `--quick`): it shows that every script runs; do not quote these figures.", ""]
    lines += ["| benchmark | compares | command | status | wall time |", "|---|---|---|---|---|"]
    for o in outcomes:
        status = "ok" if o.returncode == 0 else ("timed out" if o.returncode is None else f"failed ({o.returncode})")
        lines.append(f"| [{o.bench.name}](#{o.bench.name.replace('_', '-')}) | {o.bench.compares} | `{o.command}` "
                     f"| {status} | {o.seconds:.0f} s |")
    for o in outcomes:
        lines += ["", f"## {o.bench.name.replace('_', '-')}", "", f"`{o.command}` ({o.seconds:.0f} s)", "", "```text",
                  o.output or "(no output)", "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated benchmark names (default: all): "
                    + ", ".join(b.name for b in BENCHES))
    ap.add_argument("--quick", action="store_true", help="small sizes: check that every script runs")
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"), help="the page to write")
    args = ap.parse_args(argv)
    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = wanted - {b.name for b in BENCHES}
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    chosen = [b for b in BENCHES if not wanted or b.name in wanted]
    started = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = _machine()
    outcomes: list[Outcome] = []
    for i, b in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {b.name} ...", end="", flush=True)
        o = _run(b, args.quick)
        print(f" {'ok' if o.returncode == 0 else 'FAILED'} ({o.seconds:.0f} s)", flush=True)
        outcomes.append(o)
        # write after each script, so an interrupted run still leaves what it measured
        Path(args.out).write_text(render(outcomes, machine, started, args.quick))
    failed = [o.bench.name for o in outcomes if o.returncode != 0]
    print(f"wrote {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
