"""Process-wide tuning the ``driftline service`` command applies once its app is built.

Decoding an envelope allocates about 1,300 container objects (the MessagePack tree) that all die by
reference counting, and creates no cycles; at Python's default the garbage collector runs a young pass
every 700 allocations and, in a process of ~160,000 long-lived objects (FastAPI, pandas, SciPy), older
passes often enough to cost ~60 us per envelope, 15% of the decode (bench/bench_service.py). So the
objects alive after start-up are frozen (never scanned again) and the young threshold is raised:
cyclic garbage is still collected, in larger and rarer passes.
"""

from __future__ import annotations

import gc

__all__ = ["tune_gc"]


def tune_gc(young_objects: int) -> tuple[int, int, int]:
    """Freeze what start-up built and set the young-generation threshold (``0`` leaves it as it is);
    returns the thresholds now in force."""
    if young_objects > 0:
        gc.collect()  # start-up's own garbage, so the frozen set holds only live objects
        gc.freeze()
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(young_objects, older, oldest)
    return gc.get_threshold()
