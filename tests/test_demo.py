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


def test_ctrl_c_stops_everything_cleanly(tmp_path) -> None:
    import signal
    import time

    port = free_port()
    err = tmp_path / "err.txt"
    with open(err, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "driftline.cli.main", "demo", "--forever", "--port", str(port),
                                 "--data-dir", str(tmp_path / "data")], stdout=subprocess.DEVNULL, stderr=fh)
    try:
        deadline = time.monotonic() + 60
        while "stable traffic" not in err.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert proc.poll() is None, err.read_text()[-2000:]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.read_text()
    assert "interrupted" in text and "Traceback" not in text
    # the port is free again: nothing was left running
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine; a listener is not
        s.bind(("127.0.0.1", port))
