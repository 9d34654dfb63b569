"""The service process's garbage-collector tuning (service/process.py), in a fresh interpreter so the
test process keeps its own collector settings."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import gc, json
from driftline.service.process import tune_gc
before = gc.get_threshold()
kept = tune_gc(0)
tuned = tune_gc(50000)
junk = []
junk.append(junk)  # a cycle made after tuning is still collected
del junk
print(json.dumps({"before": before, "kept": kept, "tuned": tuned, "frozen": gc.get_freeze_count(),
                  "collected": gc.collect()}))
"""


def test_tune_gc_freezes_start_up_and_raises_only_the_young_threshold() -> None:
    out = json.loads(subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True,
                                    timeout=60).stdout)
    assert out["kept"] == out["before"]  # 0 changes nothing
    assert out["tuned"] == [50000, out["before"][1], out["before"][2]]
    assert out["frozen"] > 1000  # the interpreter's and driftline's start-up objects
    assert out["collected"] >= 1  # cycles are still found
