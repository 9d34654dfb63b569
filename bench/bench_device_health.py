"""Cost of one device-health fit (service/device_health.py) at the default bounds, against scipy.

One fit reads every device's samples of the horizon and fits memory and CPU trends for the sidecar
and the host process plus a latency comparison per model. Defaults: 6 h at one sample a minute (360
samples a series), thinned to ``fit_points`` (120). The peer, measured in the same run on the same
series, is ``scipy.stats.theilslopes`` on the thinned series (slope and interval only; our fit also
decides, ranks and builds the snapshot). CPU seconds are printed next to wall time because a shared
machine stretches the latter. Not a test.

Run: ``python bench/bench_device_health.py [devices]``
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(devices: int = 500) -> None:
    import scipy.stats as st

    from driftline.service.device_health import DeviceHealth, _thin
    from driftline.service.settings import DeviceHealthSettings
    from driftline.service.store import Store

    rng = np.random.default_rng(0)
    cfg = DeviceHealthSettings()
    n = int(cfg.horizon_seconds / cfg.min_sample_interval_seconds)
    t = 1.8e9 + np.arange(n) * cfg.min_sample_interval_seconds
    rows = []
    for d in range(devices):
        for process in ("sidecar", "host"):
            rss = 1e8 + (d % 7) * 1e6 * (t - t[0]) / 3600 + rng.normal(0, 2e6, n)
            cpu = np.cumsum(rng.uniform(0.5, 1.5, n))
            rows += [(f"edge-{d}", process, "", float(a), 1.0, float(r), float(c)) for a, r, c in zip(t, rss, cpu, strict=True)]
        rows += [(f"edge-{d}", "latency", "ranker", float(a), 0.0, float(v), 0.0)
                 for a, v in zip(t[-60:], rng.gamma(20, 0.5, 60), strict=True)]
    with tempfile.TemporaryDirectory() as tmp:
        health = DeviceHealth(Store(f"sqlite:///{Path(tmp) / 'b.sqlite'}"), cfg)
        w0, c0 = time.perf_counter(), time.process_time()
        snap = health.fit(rows, float(t[-1]))
        ours_w, ours_c = time.perf_counter() - w0, time.process_time() - c0
        health.store.close()
    series = [(t, 1e8 + rng.normal(0, 2e6, n)) for _ in range(devices * 4)]  # memory + cpu, two processes
    w0, c0 = time.perf_counter(), time.process_time()
    for x, y in series:
        pts = _thin(list(zip(x, y, strict=True)), cfg.fit_points)
        st.theilslopes([p[1] for p in pts], [p[0] / 3600 for p in pts], alpha=cfg.confidence)
    peer_w, peer_c = time.perf_counter() - w0, time.process_time() - c0
    print(f"{devices} devices x {n} samples/series: {len(rows):,} rows, {len(snap.footprints)} footprint fits, "
          f"{len(snap.latencies)} latency tests, {len(snap.flagged())} flagged")
    print(f"driftline fit: {ours_w:.2f} s wall, {ours_c:.2f} s CPU")
    print(f"scipy.stats.theilslopes on the same number of thinned series: {peer_w:.2f} s wall, {peer_c:.2f} s CPU")
    print(f"ratio driftline / scipy (CPU): {ours_c / peer_c:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
