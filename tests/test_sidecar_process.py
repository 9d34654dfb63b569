"""``driftline sidecar`` and ``driftline replay`` as real processes: SIGTERM, restarts, exit codes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from driftline.edge_sidecar.spool import Spool
from tests.harness.kafka import KafkaBroker
from tests.harness.ports import free_port, wait_for_port
from tests.sidecar_support import EnvelopeReceiver
from tests.test_sidecar_kafka import consume, per_model, post_rows, wait_health

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    return subprocess.run([sys.executable, "-m", "driftline.apps.cli.main", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**base, **(env or {})})


def sidecar_proc(config: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    return subprocess.Popen([sys.executable, "-m", "driftline.apps.cli.main", "sidecar", "--config", str(config)],
                            cwd=REPO, env={**base, **(env or {})}, stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def test_sigterm_flushes_the_open_window_and_a_restart_delivers_it(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "sidecar.yaml"
    config.write_text(yaml.safe_dump({
        "device": "dev-term", "model": "ranker", "model_version": "5",
        "window": {"seconds": 3600},  # nothing closes on time: only SIGTERM can close it
        "spool": {"path": str(tmp_path / "spool")},
        "transport": {"http": {"url": f"http://127.0.0.1:{free_port()}", "timeout_seconds": 1}},  # nobody there
        "shipper": {"shutdown_grace_seconds": 1},
        "api": {"port": port},
    }))
    log = tmp_path / "sidecar.log"
    proc = sidecar_proc(config, log)
    try:
        assert wait_for_port(port, 30), log.read_text()
        accepted = sum(post_rows(port, [{"features": {"q": float(i), "lang": "nb"}, "latency_ms": 2.0}
                                        for i in range(n)]) for n in (10, 200, 33))
        wait_health(port, lambda h: h["open_rows"] == accepted)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log.read_text()
    assert "stopped" in log.read_text()
    spool = Spool(tmp_path / "spool", 10**9)
    spooled = spool.profiles()
    spool.close()  # one process per spool directory: let the sidecar have it back
    assert [(p.key.model, p.key.model_version, p.rows) for p in spooled] == [("ranker", "5", 243)]
    assert spooled[0].runtime is not None and spooled[0].runtime.latency_ms.n == 243

    with EnvelopeReceiver() as rx:
        proc = sidecar_proc(config, log, env={"DRIFTLINE_TRANSPORT__HTTP__URL": rx.url})
        try:
            assert wait_for_port(port, 30), log.read_text()
            wait_health(port, lambda h: h["spool"]["pending"] == 0)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, log.read_text()
        assert rx.rows() == 243
        (env,) = rx.envelopes.values()
        assert env.producer["device"] == "dev-term"


def test_check_prints_effective_settings_and_bad_settings_exit_2(tmp_path: Path) -> None:
    example = REPO / "edge_sidecar" / "sidecar.example.yaml"
    out = cli("sidecar", "--config", str(example), "--check", env={"DRIFTLINE_SAMPLING__RATE": "0.25",
                                                                  "DRIFTLINE_TRANSPORT__HTTP__TOKEN": "s3cret"})
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["sampling"]["rate"] == 0.25 and shown["device"] == "edge-0042"
    assert "s3cret" not in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("window:\n  secnds: 5\n")
    out = cli("sidecar", "--config", str(bad))
    assert out.returncode == 2
    assert out.stderr.strip().startswith("driftline: error: invalid sidecar settings") and "window.secnds" in out.stderr
    assert "Traceback" not in out.stderr
    out = cli("sidecar", "--config", str(tmp_path / "missing.yaml"))
    assert out.returncode == 2 and "cannot read settings file" in out.stderr


def write_log(path: Path, rows: int, seed: int = 0, bad_time_at: int | None = None) -> list[float]:
    rng = np.random.default_rng(seed)
    times = np.round(1_700_000_000.0 + np.sort(rng.uniform(0, 600, rows)), 3)  # as written below
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ts", "age", "city", "score", "request_id"])
        for i, t in enumerate(times):
            stamp = "not a time" if i == bad_time_at else f"{t:.3f}"
            w.writerow([stamp, f"{rng.normal(40, 9):.2f}", rng.choice(["oslo", "bergen", ""]),
                        f"{rng.random():.4f}", f"r{i}"])
    return times.tolist()


def test_replay_csv_by_event_time_to_http(tmp_path: Path) -> None:
    data = tmp_path / "log.csv"
    times = write_log(data, 3000)
    with EnvelopeReceiver() as rx:
        out = cli("replay", str(data), "--model", "scorer", "--version", "2", "--variant", "canary",
                  "--device", "backfill-1", "--time-column", "ts", "--window", "60", "--output", "score",
                  "--exclude", "request_id", "--to", rx.url)
        assert out.returncode == 0, out.stderr
        assert "replayed 3000 rows" in out.stdout
        profiles = rx.profiles()
    assert sum(p.rows for p in profiles) == 3000
    expected: dict[float, int] = {}
    for t in times:
        start = (t // 60) * 60
        expected[start] = expected.get(start, 0) + 1
    got: dict[float, int] = {}
    for p in profiles:
        got[p.start] = got.get(p.start, 0) + p.rows
        assert (p.key.model, p.key.model_version, p.key.variant, p.key.source) == ("scorer", "2", "canary",
                                                                                   "backfill-1")
        assert set(p.features) == {"age", "city"} and set(p.outputs) == {"score"}
    assert got == expected
    assert sum(p.features["city"].missing for p in profiles) > 0  # empty cells are missing, not dropped


def test_replay_without_a_time_column_and_parquet(tmp_path: Path) -> None:
    import pandas as pd

    data = tmp_path / "log.parquet"
    pd.DataFrame({"x": np.arange(500.0), "label": ["a", "b"] * 250}).to_parquet(data)
    with EnvelopeReceiver() as rx:
        out = cli("replay", str(data), "--model", "m", "--version", "1", "--to", rx.url + "/")
        assert out.returncode == 0, out.stderr
        assert rx.rows() == 500
        (p,) = rx.profiles()
        assert abs(p.start - time.time()) < 300


@pytest.mark.parametrize("case", ["missing_file", "bad_time", "no_time_column", "bad_url", "rejected"])
def test_replay_bad_input_exits_2_with_one_line(tmp_path: Path, case: str) -> None:
    data = tmp_path / "log.csv"
    write_log(data, 50, bad_time_at=17 if case == "bad_time" else None)
    args = [str(data), "--model", "m", "--version", "1", "--time-column", "ts"]
    to = "http://127.0.0.1:1"
    if case == "missing_file":
        args[0] = str(tmp_path / "nope.csv")
    elif case == "no_time_column":
        args[-1] = "timestamp"
    elif case == "bad_url":
        to = "ftp://example/x"
    with EnvelopeReceiver(token="right") as rx:
        if case == "rejected":
            to = rx.url
        out = cli("replay", *args, "--to", to, "--token", "wrong")
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("driftline: error:"), out.stderr
    if case == "bad_time":
        assert "data row 18" in lines[0]
    if case == "rejected":
        assert "401" in lines[0]


def test_replay_gives_up_after_the_timeout_and_keeps_the_spool(tmp_path: Path) -> None:
    data = tmp_path / "log.csv"
    write_log(data, 20)
    spool = tmp_path / "spool"
    out = cli("replay", str(data), "--model", "m", "--version", "1", "--to", f"http://127.0.0.1:{free_port()}",
              "--spool", str(spool), "--timeout", "1")
    assert out.returncode == 1
    assert "not delivered" in out.stderr
    left = Spool(spool, 10**9)
    assert left.stats().pending_rows == 20
    left.close()


def test_replay_to_kafka(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    topic = f"driftline.envelopes.replay-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic)
    data = tmp_path / "log.jsonl"
    with data.open("w") as fh:
        for i in range(1200):
            fh.write(json.dumps({"ts": f"2024-05-01T12:{i // 60:02d}:{i % 60:02d}Z", "x": i % 17,
                                 "kind": "abc"[i % 3]}) + "\n")
    out = cli("replay", str(data), "--model", "jl", "--version", "9", "--time-column", "ts", "--window", "300",
              "--to", f"kafka://{kafka_broker.bootstrap}/{topic}")
    assert out.returncode == 0, out.stderr
    envelopes, _ = consume(kafka_broker, topic, 1200)
    assert per_model(envelopes) == {"jl": 1200}
    starts = sorted(p.start for env in envelopes.values() for p in env.profiles)
    assert len(starts) == 4 and starts[1] - starts[0] == 300

