"""Driftline's reconstruction drift against NannyML's DataReconstructionDriftCalculator, same files, same run.

Data (seeded, written once as CSV): a reference of ``--ref-chunks`` chunks and an analysis set of
three segments of ``--seg-chunks`` chunks each, ``--chunk`` rows per chunk, 10 numeric features:
``a, b`` correlated +0.8, ``c, d`` +0.6, six independent. Segments: ``same`` (drawn like the
reference), ``flip`` (``a, b`` correlated -0.8: every marginal unchanged) and ``shift`` (``z0`` moved
by 1 sd: a univariate change the reconstruction also sees, weakly).

Two processes, each timed by wall clock; each also times its own fit and evaluation:

1. Driftline: ``profile_file`` + ``attach_reconstruction`` on the reference file (what
   ``driftline reference build --reconstruction`` runs), then each analysis chunk's errors
   sketched and judged by ``evaluate_reconstruction`` (the service's decision);
2. NannyML 0.13 (``n_components=0.65``, ``chunk_size``, its default 3-sigma thresholds on the
   reference chunks), run in its own virtualenv (``--nannyml-python``), since its pins differ.

Prints both verdicts per chunk, their agreement, each tool's flags per segment and the time ratios.
Not a test; NannyML is not installed by scripts/test.sh. Run::

    python3 -m venv .nannyml-venv && .nannyml-venv/bin/pip install nannyml==0.13.1 statsmodels
    python bench/bench_reconstruction_vs_nannyml.py --nannyml-python .nannyml-venv/bin/python
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FEATURES = ["a", "b", "c", "d", "z0", "z1", "z2", "z3", "z4", "z5"]

NANNYML_SCRIPT = r'''
import json, sys, time, warnings
warnings.simplefilter("ignore")
import pandas as pd
import nannyml as nml
ref_path, cur_path, chunk, features = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(",")
ref, cur = pd.read_csv(ref_path), pd.read_csv(cur_path)
t0 = time.perf_counter()
calc = nml.DataReconstructionDriftCalculator(column_names=features, chunk_size=chunk).fit(ref)
t1 = time.perf_counter()
res = calc.calculate(cur).filter(period="analysis").to_df()
t2 = time.perf_counter()
col = res["reconstruction_error"]
print(json.dumps({"fit_s": t1 - t0, "eval_s": t2 - t1, "flags": [bool(x) for x in col["alert"]],
                  "values": [float(x) for x in col["value"]], "upper": float(col["upper_threshold"].iloc[0]),
                  "lower": float(col["lower_threshold"].iloc[0])}))
'''

DRIFTLINE_SCRIPT = r'''
import json, sys, time
import numpy as np
from driftline.datafiles import DataFile
from driftline.profile import StreamKey
from driftline.profiling import attach_reconstruction, profile_file
from driftline.reconstruction import ErrorSketch, evaluate_reconstruction
ref_path, cur_path, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
data = DataFile(ref_path)
prof = attach_reconstruction(data, profile_file(data, StreamKey.of("bench", "1")))
model = prof.reconstruction.decoded_model()
t1 = time.perf_counter()
cols = DataFile(cur_path).read_all()
n = len(next(iter(cols.values())))
flags, values = [], []
res = None
for lo in range(0, n, chunk):
    part = {k: np.asarray(v[lo:lo + chunk], dtype=float) for k, v in cols.items()}
    res = evaluate_reconstruction(prof.reconstruction, ErrorSketch(model.digest).update(model.errors(part)))
    flags.append(res.drifted)
    values.append(res.error_mean)
t2 = time.perf_counter()
print(json.dumps({"fit_s": t1 - t0, "eval_s": t2 - t1, "flags": flags, "values": values, "k": model.k,
                  "upper": res.upper, "lower": res.lower}))
'''


def draw(rng: np.random.Generator, n: int, flip: bool = False, shift: float = 0.0) -> np.ndarray:
    rho = -0.8 if flip else 0.8
    ab = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], n)
    cd = rng.multivariate_normal([0, 0], [[1, 0.6], [0.6, 1]], n)
    z = rng.normal(size=(n, 6))
    z[:, 0] += shift
    return np.column_stack([ab, cd, z])


def write(path: Path, x: np.ndarray) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(FEATURES)
        w.writerows(np.round(x, 6).tolist())


def run(cmd: list[str]) -> tuple[dict, float]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    return json.loads(out.stdout.strip().splitlines()[-1]), wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--ref-chunks", type=int, default=20)
    ap.add_argument("--seg-chunks", type=int, default=10)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--nannyml-python", default=".nannyml-venv/bin/python")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    segs = [("same", {}), ("flip", {"flip": True}), ("shift", {"shift": 1.0})]
    with tempfile.TemporaryDirectory() as tmp:
        ref_p, cur_p = Path(tmp) / "reference.csv", Path(tmp) / "analysis.csv"
        write(ref_p, draw(rng, args.chunk * args.ref_chunks))
        write(cur_p, np.vstack([draw(rng, args.chunk * args.seg_chunks, **kw) for _, kw in segs]))
        dl, dl_wall = run([sys.executable, "-c", DRIFTLINE_SCRIPT, str(ref_p), str(cur_p), str(args.chunk)])
        nm, nm_wall = run([args.nannyml_python, "-c", NANNYML_SCRIPT, str(ref_p), str(cur_p), str(args.chunk),
                           ",".join(FEATURES)])
    labels = [name for name, _ in segs for _ in range(args.seg_chunks)]
    print(f"{'chunk':>5} {'segment':>7} {'driftline':>16} {'nannyml':>16}")
    for i, seg in enumerate(labels):
        print(f"{i:>5} {seg:>7} {dl['values'][i]:>9.4f} {'DRIFT' if dl['flags'][i] else 'ok':>6} "
              f"{nm['values'][i]:>9.4f} {'DRIFT' if nm['flags'][i] else 'ok':>6}")
    agree = sum(a == b for a, b in zip(dl["flags"], nm["flags"], strict=True)) / len(labels)
    print(f"\nbands: driftline [{dl['lower']:.4f}, {dl['upper']:.4f}] (CLT, z=3, k={dl['k']}); "
          f"nannyml [{nm['lower']:.4f}, {nm['upper']:.4f}] (reference chunks, 3 sd)")
    for seg, _ in segs:
        idx = [i for i, s in enumerate(labels) if s == seg]
        print(f"{seg:>6}: driftline flags {sum(dl['flags'][i] for i in idx)}/{len(idx)}, "
              f"nannyml flags {sum(nm['flags'][i] for i in idx)}/{len(idx)}")
    print(f"agreement: {agree:.1%} of {len(labels)} chunks")
    dl_c, nm_c = dl["fit_s"] + dl["eval_s"], nm["fit_s"] + nm["eval_s"]
    print(f"compute (fit + evaluate, file reading included for driftline only): driftline {dl_c:.3f} s, "
          f"nannyml {nm_c:.3f} s, ratio {nm_c / dl_c:.1f}x")
    print(f"whole process (imports, reading, fit, evaluate): driftline {dl_wall:.2f} s, nannyml {nm_wall:.2f} s, "
          f"ratio {nm_wall / dl_wall:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
