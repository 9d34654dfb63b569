"""Driftline's label-free performance estimate against NannyML's CBPE on the same data files.

Writes one labelled reference and a series of analysis chunks with growing covariate shift (the
inputs move, ``P(y|x)`` stays: ``tests/estimate_cases.py``) as CSV files. Driftline profiles the
reference with its labels (``reference build --label``: the calibration) and each chunk *without*
labels, and estimates from the chunk's score sketch. NannyML 0.13's ``CBPE`` is fitted on the same
reference file and estimates the same chunks, in its own virtualenv (NannyML pins packages the
project's tests must not see; run ``python -m venv --system-site-packages .nannyml-venv &&
.nannyml-venv/bin/pip install nannyml==0.13.1`` first, or pass ``--nannyml-python``). For every
chunk and metric it prints the realised value (the chunk's labels, exact), both estimates,
Driftline's band, whether NannyML's estimate and the realised value lie inside it, and the time of
each tool. Not a test; bench-only dependency.

Run: ``python bench/bench_cbpe_vs_nannyml.py [--rows 3000] [--chunks 8] [--seed 0]``
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driftline.datafiles import DataFile  # noqa: E402
from driftline.estimate import METRICS, Calibration, estimate_performance, realised_performance  # noqa: E402
from driftline.profile import StreamKey  # noqa: E402
from driftline.profiling import calibrate_file, profile_file  # noqa: E402
from tests.estimate_cases import THRESHOLD, draw  # noqa: E402

NANNYML = r'''
import json, sys, time, warnings
import pandas as pd
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
import nannyml as nml
ref = pd.read_csv(sys.argv[1])
chunks = [pd.read_csv(p) for p in sys.argv[3:]]
ana = pd.concat(chunks, ignore_index=True)
t_read = time.perf_counter()
for df in (ref, ana):
    df["y_pred"] = (df["score"] >= float(sys.argv[2])).astype(int)
est = nml.CBPE(y_pred_proba="score", y_pred="y_pred", y_true="y", problem_type="classification_binary",
               metrics=["roc_auc", "f1", "precision", "recall", "accuracy"], chunk_size=len(chunks[0]))
est.fit(ref)
res = est.estimate(ana.drop(columns=["y"])).filter(period="analysis").to_df()
out = []
for i in range(len(res)):
    row = {}
    for m in ("roc_auc", "f1", "precision", "recall", "accuracy"):
        row[m] = {"value": float(res[(m, "value")].iloc[i]), "sampling_error": float(res[(m, "sampling_error")].iloc[i]),
                  "lower": float(res[(m, "lower_confidence_boundary")].iloc[i]),
                  "upper": float(res[(m, "upper_confidence_boundary")].iloc[i])}
    out.append(row)
print(json.dumps({"chunks": out, "seconds": time.perf_counter() - t0, "import_read_seconds": t_read - t0,
                  "version": nml.__version__}))
'''


def _write(path: Path, d: dict[str, np.ndarray], labels: bool = True) -> None:
    cols = [k for k in d if labels or k != "y"]
    with open(path, "w") as f:
        f.write(",".join(cols) + "\n")
        np.savetxt(f, np.column_stack([d[k] for k in cols]), delimiter=",", fmt="%.17g")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=3000, help="rows per analysis chunk")
    ap.add_argument("--reference-rows", type=int, default=20_000)
    ap.add_argument("--chunks", type=int, default=8, help="chunks, shifted from 0 to --max-shift")
    ap.add_argument("--max-shift", type=float, default=1.2, help="mean shift of the inputs in the last chunk (σ)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nannyml-python", default=str(ROOT / ".nannyml-venv" / "bin" / "python"))
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="cbpe-bench-") as tmp:
        tmpd = Path(tmp)
        ref = draw(rng, args.reference_rows)
        _write(tmpd / "reference.csv", ref)
        shifts = np.linspace(0.0, args.max_shift, args.chunks)
        chunks, labelled, unlabelled = [], [], []
        for i, s in enumerate(shifts):
            d = draw(rng, args.rows, shift=float(s), scale=1.0 + 0.25 * float(s))
            chunks.append(d)
            labelled.append(tmpd / f"chunk{i}.csv")  # NannyML drops y before estimating; it reads it for nothing else
            _write(labelled[-1], d)
            unlabelled.append(tmpd / f"chunk{i}-nolabels.csv")
            _write(unlabelled[-1], d, labels=False)

        t0 = time.perf_counter()
        data = DataFile(tmpd / "reference.csv")
        prof = profile_file(data, StreamKey.of("bench", "v1", "reference", "training"), outputs=["score"],
                            exclude=["y"])
        cal = Calibration.from_dict(calibrate_file(data, prof, "score", "y", threshold=THRESHOLD))
        ours = []
        for path in unlabelled:
            window = profile_file(DataFile(path), StreamKey.of("bench", "v1"), outputs=["score"])
            col = window.outputs["score"]
            ours.append(estimate_performance(cal, col))  # type: ignore[arg-type]
        t_ours = time.perf_counter() - t0

        env = {**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"}
        t1 = time.perf_counter()
        proc = subprocess.run([args.nannyml_python, "-c", NANNYML, str(tmpd / "reference.csv"), str(THRESHOLD),
                               *map(str, labelled)], capture_output=True, text=True, env=env, timeout=1800)
        t_theirs = time.perf_counter() - t1
        if proc.returncode != 0:
            sys.exit(f"NannyML failed (is it installed in {args.nannyml_python}?):\n{proc.stderr[-2000:]}")
        theirs = json.loads(proc.stdout.strip().splitlines()[-1])

    print(f"reference {args.reference_rows} rows, {args.chunks} chunks of {args.rows} rows, inputs shifted "
          f"0..{args.max_shift} σ; NannyML {theirs['version']}")
    print(f"{'chunk':>5} {'metric':>9} {'realised':>9} {'driftline':>9} {'band':>17} {'nannyml':>9} "
          f"{'nml band':>17} {'nml in band':>11} {'real in band':>12}")
    agree = covered = nml_covered = total = 0
    diffs = []
    for i, (d, est) in enumerate(zip(chunks, ours, strict=True)):
        real = realised_performance(d["score"], d["y"], THRESHOLD)
        for m in METRICS:
            e, n = est.metric(m), theirs["chunks"][i][m]
            inside = e.covers(n["value"])
            agree += inside
            covered += e.covers(real[m])
            nml_covered += n["lower"] <= real[m] <= n["upper"]
            total += 1
            diffs.append(abs(e.value - n["value"]))
            print(f"{i:>5} {m:>9} {real[m]:9.4f} {e.value:9.4f} [{e.lower:.4f}, {e.upper:.4f}] {n['value']:9.4f} "
                  f"[{n['lower']:.4f}, {n['upper']:.4f}] {'yes' if inside else 'NO':>11} "
                  f"{'yes' if e.covers(real[m]) else 'NO':>12}")
    print(f"NannyML's estimate inside Driftline's band: {agree}/{total}; realised inside Driftline's band: "
          f"{covered}/{total}, inside NannyML's: {nml_covered}/{total}")
    print(f"|Driftline - NannyML|: median {np.median(diffs):.4f}, max {np.max(diffs):.4f}")
    print(f"time: Driftline {t_ours:.2f} s (profile reference + calibrate + profile and estimate every chunk), "
          f"NannyML {t_theirs:.2f} s (process incl. import {theirs['import_read_seconds']:.2f} s and read); "
          f"ratio {t_theirs / t_ours:.1f}x; without NannyML's import and reading: "
          f"{(theirs['seconds'] - theirs['import_read_seconds']) / t_ours:.1f}x")


if __name__ == "__main__":
    main()
