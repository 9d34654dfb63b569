"""Profile update throughput and envelope size, against their natural peers in the same run.

1. Throughput: ``WindowProfile.update`` on a 200,000 x 20 float batch (feature-values per second),
   next to raw ``datasketches.vector_of_kll_floats_sketches.update`` on the same batch. Goal: within 2x.
2. Size: the encoded envelope of 1,000,000 rows x 20 features versus the same rows as JSON.
   Goal: >= 1000x fewer bytes.

Run: ``python bench/bench_profile.py [--rows-size 1000000]``. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from datasketches import vector_of_kll_floats_sketches

from driftline.columns import DEFAULT_KLL_K
from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.wire import Envelope, encode_envelope


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--cols", type=int, default=20)
    ap.add_argument("--size-rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.rows, args.cols))
    x32 = x.astype(np.float32)
    names = [f"f{i}" for i in range(args.cols)]
    values = args.rows * args.cols

    def ours() -> None:
        WindowProfile(StreamKey.of("m", "v"), 0, 60).update(x, feature_names=names)

    def raw() -> None:
        vector_of_kll_floats_sketches(DEFAULT_KLL_K, args.cols).update(x32)

    t_ours = best_of(ours, args.repeats)
    t_raw = best_of(raw, args.repeats)
    print(f"update {args.rows} x {args.cols} float64 batch (best of {args.repeats}):")
    print(f"  driftline WindowProfile.update        {values / t_ours / 1e6:8.1f} M values/s ({t_ours * 1e3:.1f} ms)")
    print(f"  datasketches vector_of_kll (float32)  {values / t_raw / 1e6:8.1f} M values/s ({t_raw * 1e3:.1f} ms)")
    print(f"  ratio driftline/raw time              {t_ours / t_raw:8.2f}x   (goal <= 2x)")

    # ---- size ----
    n = args.size_rows
    prof = WindowProfile(StreamKey.of("m", "v", source="device-1"), 0, 60, ProfileConfig())
    json_bytes = 0
    chunk = 100_000
    for start in range(0, n, chunk):
        block = rng.normal(size=(min(chunk, n - start), args.cols))
        prof.update(block, feature_names=names)
        rows = [dict(zip(names, r, strict=True)) for r in block.tolist()]
        json_bytes += sum(len(json.dumps(r)) + 1 for r in rows)  # JSON Lines
    env_bytes = len(encode_envelope(Envelope([prof])))
    print(f"size of {n} rows x {args.cols} features:")
    print(f"  as JSON Lines       {json_bytes:>14,} bytes")
    print(f"  as one envelope     {env_bytes:>14,} bytes")
    print(f"  ratio               {json_bytes / env_bytes:>14,.0f}x   (goal >= 1000x)")


if __name__ == "__main__":
    main()
