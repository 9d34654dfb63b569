"""``driftline demo`` as a new user runs it: a real subprocess, its summary, its exit code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.harness.ports import free_port


@pytest.mark.parametrize("bad", [False, True], ids=["harmless-canary", "bad-canary"])
def test_demo_finds_the_drifted_devices_judges_the_canary_and_fires_one_webhook(bad: bool) -> None:
    args = [sys.executable, "-m", "driftline.cli.main", "demo", "--duration", "30", "--port", str(free_port()),
            "--json", "--seed", "3"]
    if bad:
        args.append("--bad-canary")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["dataset_drift"] is True and summary["drifted_features"]
    assert "score" in summary["prediction_shift"]
    assert set(summary["drifted_devices"]) == set(summary["expected_drifted_devices"])
    assert summary["canary"]["verdict"] == ("rollback" if bad else "promote")
    reqs = summary["retraining_requests"]
    assert len(reqs) == 1 and reqs[0]["model"] == "digits-camera" and reqs[0]["drifted_features"]
    assert "service running" in proc.stderr and "Traceback" not in proc.stderr


def test_demo_bad_arguments_exit_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "driftline.cli.main", "demo", "--devices", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--devices" in proc.stderr and "Traceback" not in proc.stderr
