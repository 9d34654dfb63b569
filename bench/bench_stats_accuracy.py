"""How far are the sketch-based scores from the exact ones on the raw data? (the numbers in docs/statistics.md)

For each KLL size, distribution shape, shift and sample size, profiles both samples, computes the
scores from the profiles and the same formulas on the raw arrays (``exact_numeric_scores``; its KS
equals ``scipy.stats.ks_2samp``), and prints the worst absolute error per method plus the smallest
``a`` such that ``|sketch - exact| <= a + b * exact`` held everywhere for the documented ``b``. Also
prints how far the conservative effect ever rose above the exact score (KS and Wasserstein effects are
lower bounds whenever the sketches' rank-error bounds hold; binned effects use the sketch's own bin
edges, so they may differ slightly from exact bins). Not a test.

Run: ``python bench/bench_stats_accuracy.py [--seeds 10] [--k 200 400]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from driftline.profile import ProfileConfig, StreamKey, WindowProfile  # noqa: E402
from driftline.stats import exact_numeric_scores, numeric_scores  # noqa: E402
from tests.stats_cases import DISTRIBUTIONS, make_pair  # noqa: E402

RELATIVE = {"ks": 0.0, "psi": 0.3, "jensen_shannon": 0.0, "hellinger": 0.0, "wasserstein": 0.2}
SIZES = ((5_000, 5_000), (50_000, 5_000), (50_000, 50_000), (500_000, 500_000))
SHIFTS = (0.0, 0.1, 0.5, 1.0)


def column(values: np.ndarray, k: int):  # -> NumericColumn
    return WindowProfile(StreamKey.of("m", "v"), 0, 1, ProfileConfig(kll_k=k)).update({"x": values}).features["x"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--k", type=int, nargs="+", default=[200, 400])
    args = ap.parse_args()
    t0 = time.perf_counter()
    for k in args.k:
        worst: dict[str, tuple[float, str]] = {m: (0.0, "") for m in RELATIVE}
        worst_light = dict.fromkeys(RELATIVE, 0.0)  # every shape but the heavy-tailed log-normal
        need_a = dict.fromkeys(RELATIVE, 0.0)
        effect_excess = dict.fromkeys(RELATIVE, -1.0)
        cases = 0
        for n_ref, n_cur in SIZES:
            for dist in DISTRIBUTIONS:
                for shift in SHIFTS:
                    for seed in range(args.seeds):
                        ref, cur = make_pair(dist, shift, 1000 + seed, n_ref, n_cur)
                        s = numeric_scores(column(ref, k), column(cur, k))
                        e = exact_numeric_scores(ref[np.isfinite(ref)], cur[np.isfinite(cur)])
                        cases += 1
                        for m, rel in RELATIVE.items():
                            err = abs(s.as_dict()[m] - e[m])
                            if err > worst[m][0]:
                                worst[m] = (err, f"{dist} shift={shift} n={n_ref}/{n_cur}")
                            if dist != "lognormal":
                                worst_light[m] = max(worst_light[m], err)
                            need_a[m] = max(need_a[m], err - rel * e[m])
                            effect_excess[m] = max(effect_excess[m], s.effects[m] - e[m])
        print(f"KLL k={k}: {cases} cases ({len(DISTRIBUTIONS)} shapes x {len(SHIFTS)} shifts x {len(SIZES)} sizes x {args.seeds} seeds)")
        for m, rel in RELATIVE.items():
            print(f"  {m:<15} worst |error| {worst[m][0]:.4f} ({worst[m][1]}), {worst_light[m]:.4f} without "
                  f"log-normal;  |error| <= {need_a[m]:.4f} + {rel} * exact held;  "
                  f"max(effect - exact) {effect_excess[m]:+.4f}")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
