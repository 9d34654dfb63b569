"""Driftline's default verdicts against Evidently's on the labelled cases (the table in docs/statistics.md).

For every case of ``tests/stats_labelled.py`` (the same seeds as the test), draws both samples, and
prints Driftline's verdict from the profiles, Evidently 0.7's verdict from its default stattest on the
raw data, and the exact test and effect on the raw data (scipy) that say which is right. Ends with a
Markdown table of the cases where the two tools disagree. Not a test.

Run: ``python bench/bench_stats_verdicts.py [--max-rows 1000000]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.stats_labelled import CASES, driftline_verdict, evidently_verdict, exact_evidence  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-rows", type=int, default=1_000_000, help="skip cases with more rows a side")
    args = ap.parse_args()
    rows, wrong = [], {"driftline": 0, "evidently": 0}
    t0 = time.perf_counter()
    for index, case in enumerate(CASES):
        if case.n > args.max_rows:
            continue
        ref, cur = case.draw(index)
        ours, effect = driftline_verdict(ref, cur, case.kind)
        theirs, score, test = evidently_verdict(ref, cur, case.kind)
        p, exact, unit = exact_evidence(ref, cur, case.kind)
        wrong["driftline"] += ours != case.drift
        wrong["evidently"] += theirs != case.drift
        print(f"{case.name:34s} truth={case.drift!s:5} driftline={ours!s:5} ({effect:.3f}) "
              f"evidently={theirs!s:5} ({test} {score:.3g})  exact p={p:.2g} {unit}={exact:.3f}", flush=True)
        if ours != theirs:
            rows.append((case, ours, effect, theirs, test, score, p, exact, unit))
    print(f"\n{len(CASES)} cases in {time.perf_counter() - t0:.0f}s; verdicts against the truth wrong: "
          f"Driftline {wrong['driftline']}, Evidently {wrong['evidently']}\n")
    print("| case | truth | Driftline (effect) | Evidently (default test, score) | exact test p, effect on raw data |")
    print("|---|---|---|---|---|")
    for case, ours, effect, theirs, test, score, p, exact, unit in rows:
        truth = "drift" if case.drift else "no drift"
        print(f"| {case.name} | {truth} | {'drift' if ours else 'no drift'} ({effect:.3f}) | "
              f"{'drift' if theirs else 'no drift'} ({test} {score:.3g}) | p={p:.2g}, {unit}={exact:.3f} |")


if __name__ == "__main__":
    main()
