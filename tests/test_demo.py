"""``driftline demo`` as a new user runs it: a real subprocess, its summary, its exit code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.harness.ports import free_port


@pytest.mark.parametrize("bad", [False, True], ids=["harmless-canary", "bad-canary"])
def test_demo_finds_the_drifted_devices_judges_the_canary_and_fires_one_webhook(bad: bool) -> None:
    args = [sys.executable, "-m", "driftline.apps.cli.main", "demo", "--duration", "30", "--port", str(free_port()),
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
    proc = subprocess.run([sys.executable, "-m", "driftline.apps.cli.main", "demo", "--devices", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--devices" in proc.stderr and "Traceback" not in proc.stderr


def _wait_for(path, text: str, proc, timeout: float = 90.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while text not in path.read_text() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
    assert text in path.read_text(), path.read_text()[-2000:]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_prints_the_summary_and_cleans_up(tmp_path, sig: str) -> None:
    """Ctrl-C and SIGTERM end --forever with the summary; the URLs came while it ran; the temp folder is gone."""
    import re
    import signal
    import socket
    from pathlib import Path

    port = free_port()
    err, out = tmp_path / "err.txt", tmp_path / "out.txt"
    with open(err, "w") as fe, open(out, "w") as fo:
        proc = subprocess.Popen([sys.executable, "-m", "driftline.apps.cli.main", "demo", "--forever", "--port", str(port)],
                                stdout=fo, stderr=fe)
    try:
        _wait_for(err, "Open these while the demo runs (until Ctrl-C)", proc)
        text = err.read_text()
        assert "until Ctrl-C or SIGTERM" in text and "60s" not in text  # the header is true to --forever
        assert f"http://127.0.0.1:{port}/models/digits-camera" in text
        import httpx

        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200  # announced = answering
        data_dir = Path(re.search(r"data in (\S+)", text).group(1))
        assert data_dir.is_dir()
        _wait_for(err, "windows shipped", proc)  # traffic is flowing
        proc.send_signal(getattr(signal, sig))
        assert proc.wait(timeout=60) == 128 + getattr(signal, sig)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    text, summary = err.read_text(), out.read_text()
    assert f"{sig}: stopping the fleet" in text and "Traceback" not in text
    assert "Driftline demo summary" in summary and "rows observed on the fleet" in summary
    assert "has stopped" in summary
    assert not data_dir.exists()  # the temporary folder went with it
    with socket.socket() as s:  # the port is free again: nothing was left running
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine; a listener is not
        s.bind(("127.0.0.1", port))


@pytest.mark.parametrize("command", ["demo", "service"])
def test_a_busy_port_is_one_line_and_exit_2(tmp_path, command: str) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "driftline.apps.cli.main", command, "--port", str(port)],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "in use" in lines[0] and "--port" in lines[0]
    assert "http://" not in proc.stderr  # no URL announced for a server that never started
    assert list(tmp_path.iterdir()) == []  # and nothing written
