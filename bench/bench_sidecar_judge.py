"""What judging drift on the device costs: one closed window of 50 features against its reference.

Measures, in this process with the heavy packages absent from the path they take (the judge imports
only the core): evaluations per second of ``Judge.judge_window`` (one window verdict plus the
rolling merge of the last ``rolling_windows`` windows, the work the sidecar does per closed window),
CPU milliseconds per evaluation, and the resident memory the judge adds (VmRSS before building the
judge and its reference, and after the timed loop).

Run from the repository root: ``python bench/bench_sidecar_judge.py [--features 50] [--rows 2000]``.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from driftline.edge_sidecar.judge import ActionRunner, Judge, ReferenceSource  # noqa: E402
from driftline.edge_sidecar.settings import JudgeSettings  # noqa: E402
from driftline.profile import StreamKey, WindowProfile  # noqa: E402
from driftline.wire import Envelope, encode_envelope  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def columns(rng: np.random.Generator, n: int, features: int, shift: float) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for i in range(features):
        if i % 5 == 4:
            out[f"c{i}"] = rng.choice(np.array(["a", "b", "c", "d", "e"], dtype=object), n)
        else:
            out[f"x{i}"] = rng.normal(shift, 1, n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=50)
    ap.add_argument("--rows", type=int, default=2000, help="rows per window")
    ap.add_argument("--windows", type=int, default=60, help="windows judged in the timed loop")
    ap.add_argument("--rolling", type=int, default=6)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    before = rss_mb()
    ref = WindowProfile(StreamKey.of("m", "1"), 0.0, 1.0)
    ref.update(columns(rng, 20_000, args.features, 0.0), {"score": rng.uniform(0, 1, 20_000)})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ref.dlp"
        path.write_bytes(encode_envelope(Envelope([ref])))
        js = JudgeSettings(enabled=True, reference_files=[path], rolling_windows=args.rolling)
        judge = Judge(js, ReferenceSource(js, None), ActionRunner(js))
        windows = []
        for i in range(args.windows):
            w = WindowProfile(StreamKey.of("m", "1", source="d"), i * 60.0, (i + 1) * 60.0)
            w.update(columns(rng, args.rows, args.features, 0.5 if i % 2 else 0.0),
                     {"score": rng.uniform(0, 1, args.rows)})
            windows.append(w)
        built = rss_mb()
        judge.judge_window(windows[0])  # warm up
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for w in windows[1:]:
            judge.judge_window(w)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        after = rss_mb()
    n = len(windows) - 1
    print(f"features={args.features} rows/window={args.rows} rolling_windows={args.rolling} windows={n}")
    print(f"evaluations/s (window + rolling): {n / wall:.1f}   wall ms/evaluation: {1000 * wall / n:.2f}   "
          f"cpu ms/evaluation: {1000 * cpu / n:.2f}")
    print(f"RSS MB: start {before:.1f}, with reference and {args.windows} windows built {built:.1f}, "
          f"after judging {after:.1f} (judging added {after - built:+.1f})")
    print(f"evaluations counted: {dict(judge.evaluations)}")


if __name__ == "__main__":
    main()
