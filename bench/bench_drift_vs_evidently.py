"""``driftline drift`` against Evidently's DataDriftPreset, both as whole processes on the same files.

Same files, same run: ``--rows`` x 20 numeric features (5 shifted by 0.5 sd) written once as CSV and
as Parquet. For each format three processes run, each timed by wall clock with its own peak RSS
(``os.wait4``'s rusage of that child alone):

1. ``driftline drift ref cur --json`` (the CLI as a user runs it);
2. a small Evidently 0.7 script with its defaults: pandas reads both files, ``Report([DataDriftPreset()])``;
3. the floor: pyarrow reads both files (multi-threaded) and raw ``vector_of_kll_floats_sketches``
   updates sketch every column, nothing else.

Prints the ratios (goals: >= 20x Evidently from CSV, >= 40x from Parquet, within 1.3x of the floor),
peak memory (goal: <= 1/4 of Evidently's) and both tools' drifted column sets (goal: the same).
Not a test. Run: ``python bench/bench_drift_vs_evidently.py [--rows 1000000] [--formats csv,parquet]``
(needs the ``reports`` extra; ``--rows 50000`` runs in seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EVIDENTLY_SCRIPT = r'''
import json, sys, warnings
warnings.simplefilter("ignore")
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

ref_path, cur_path = sys.argv[1], sys.argv[2]
read = pd.read_parquet if ref_path.endswith(".parquet") else pd.read_csv
ref, cur = read(ref_path), read(cur_path)
definition = DataDefinition(numerical_columns=list(ref.columns))
snap = Report([DataDriftPreset()]).run(Dataset.from_pandas(cur, data_definition=definition),
                                        Dataset.from_pandas(ref, data_definition=definition))
drifted = []
for m in snap.dict()["metrics"]:
    config, value = m.get("config", {}), m.get("value")
    if "ValueDrift" in str(m.get("metric_name", "")) + json.dumps(config, default=str) and isinstance(value, (int, float)):
        method, threshold = str(config.get("method", "")), config.get("threshold", 0.1)
        # p-value methods flag below the threshold, distance methods at or above it
        if ("p_value" in method and value < threshold) or ("p_value" not in method and value >= threshold):
            drifted.append(config.get("column"))
print(json.dumps(sorted(drifted)))
'''

FLOOR_SCRIPT = r'''
import sys
import numpy as np
from datasketches import vector_of_kll_floats_sketches

for path in sys.argv[1:3]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq
        table = pq.read_table(path, use_threads=True)
    else:
        import pyarrow.csv as pcsv
        table = pcsv.read_csv(path)
    # straight from the Arrow buffers into one float32 row-major matrix (to_numpy would import pandas)
    x = np.empty((table.num_rows, table.num_columns), dtype=np.float32)
    for j in range(table.num_columns):
        start = 0
        for ch in table.column(j).chunks:
            x[start:start + len(ch), j] = np.frombuffer(ch.buffers()[1], dtype=np.float64, count=len(ch),
                                                        offset=ch.offset * 8)
            start += len(ch)
    del table
    vector_of_kll_floats_sketches(400, x.shape[1]).update(x)
'''


def run_measured(cmd: list[str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes of this child alone, stdout) of one whole process.

    ``os.wait4`` returns the rusage of that one child (Linux reports ``ru_maxrss`` in KiB), unlike
    ``getrusage(RUSAGE_CHILDREN)``, which is the largest over all children so far.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(cmd[:3])} failed ({proc.returncode}):\n{err.read()[-2000:]}")
        return wall, int(usage.ru_maxrss) * 1024, out.read()


def write_files(folder: Path, rows: int, features: int, shifted: int) -> dict[str, tuple[Path, Path]]:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(features)]
    files: dict[str, tuple[Path, Path]] = {}
    for side in ("ref", "cur"):
        x = rng.normal(size=(rows, features))
        if side == "cur":
            x[:, :shifted] += 0.5
        table = pa.table({n: x[:, i] for i, n in enumerate(names)})
        pcsv.write_csv(table, folder / f"{side}.csv")
        pq.write_table(table, folder / f"{side}.parquet")
    for fmt in ("csv", "parquet"):
        files[fmt] = (folder / f"ref.{fmt}", folder / f"cur.{fmt}")
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows per file (default 1,000,000)")
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--shifted", type=int, default=5)
    ap.add_argument("--formats", default="csv,parquet", help="comma-separated: csv, parquet")
    ap.add_argument("--dir", default=None, help="where to write the data files (default: a temporary folder)")
    ap.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    folder = Path(args.dir or tempfile.mkdtemp(prefix="driftline-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    if args.write_only:
        write_files(folder, args.rows, args.features, args.shifted)
        return
    # The data is made in a child process: a forked child's peak RSS (ru_maxrss) starts at the size of
    # its parent, so a parent that held the generated tables would inflate every measured peak.
    subprocess.run([sys.executable, __file__, "--write-only", "--dir", str(folder), "--rows", str(args.rows),
                    "--features", str(args.features), "--shifted", str(args.shifted)], check=True)
    files = {fmt: (folder / f"ref.{fmt}", folder / f"cur.{fmt}") for fmt in ("csv", "parquet")}
    truth = {f"f{i}" for i in range(args.shifted)}
    exe = shutil.which("driftline")
    driftline = [exe] if exe else [sys.executable, "-m", "driftline.apps.cli.main"]
    ev_script, floor_script = folder / "evidently_drift.py", folder / "floor.py"
    ev_script.write_text(EVIDENTLY_SCRIPT)
    floor_script.write_text(FLOOR_SCRIPT)
    goals = {"csv": 20.0, "parquet": 40.0}

    print(f"{args.rows:,} rows x {args.features} features per file, {args.shifted} shifted by 0.5 sd; "
          f"whole processes, wall time and peak RSS each")
    for fmt in [f.strip() for f in args.formats.split(",") if f.strip()]:
        ref, cur = files[fmt]
        t_dl, rss_dl, out = run_measured([*driftline, "drift", str(ref), str(cur), "--json"])
        ours = {f["name"] for f in json.loads(out)["features"] if f["drift_detected"]}
        t_fl, rss_fl, _ = run_measured([sys.executable, str(floor_script), str(ref), str(cur)])
        t_ev, rss_ev, out = run_measured([sys.executable, str(ev_script), str(ref), str(cur)])
        theirs = set(json.loads(out.strip().splitlines()[-1]))
        mib = 1024 * 1024
        print(f"\n{fmt} ({ref.stat().st_size / mib:,.0f} MiB per file)")
        print(f"  driftline drift --json        {t_dl:8.2f} s  {rss_dl / mib:7.0f} MiB  flags {sorted(ours)}")
        print(f"  Evidently DataDriftPreset     {t_ev:8.2f} s  {rss_ev / mib:7.0f} MiB  flags {sorted(theirs)}")
        print(f"  floor (pyarrow + raw KLL)     {t_fl:8.2f} s  {rss_fl / mib:7.0f} MiB")
        print(f"  speed-up over Evidently       {t_ev / t_dl:8.1f}x   (goal >= {goals[fmt]:.0f}x)")
        print(f"  time over the floor           {t_dl / t_fl:8.2f}x   (goal <= 1.3x)")
        print(f"  memory vs Evidently           {rss_dl / rss_ev:8.2f}    (goal <= 0.25)")
        print(f"  same drifted set: {ours == theirs}; both equal the shifted columns: "
              f"{ours == truth and theirs == truth}")
    if not args.dir:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
