"""``driftline reference upload / list`` and ``reference build --upload`` against a real service on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from driftline.service.settings import ServiceSettings
from tests.harness.ports import free_port
from tests.service_support import reference_bytes, running_service

TOKEN = "s3cret-token-for-tests"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items() if k != "DRIFTLINE_API_TOKEN"}
    return subprocess.run([sys.executable, "-m", "driftline.apps.cli.main", *args], capture_output=True, text=True,
                          timeout=120, env={**base, **(env or {})})


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("driftline: error: ") and "Traceback" not in proc.stderr, lines
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def service(tmp_path):
    s = ServiceSettings(database_url=f"sqlite:///{tmp_path / 's.sqlite'}", port=0, api_token=TOKEN)
    with running_service(s) as url:
        yield url


def test_upload_list_and_build_upload_with_a_token(tmp_path: Path, service: str) -> None:
    rng = np.random.default_rng(3)
    ref = tmp_path / "ref.dlp"
    ref.write_bytes(reference_bytes(rng, "fraud", "v3", n=1200))
    # nothing yet
    empty = cli("reference", "list", "--to", service)
    assert empty.returncode == 0 and "no models" in empty.stdout
    # a write without the token is refused in one line, exit 2, naming the fix
    one_line_error(cli("reference", "upload", str(ref), "--to", service), 2, "401", "--token")
    one_line_error(cli("reference", "upload", str(ref), "--to", service, "--token", "wrong"), 2, "401", "refused")
    # model and version default to the ones stored in the file
    up = cli("reference", "upload", str(ref), "--to", service + "/", "--token", TOKEN)
    assert up.returncode == 0, up.stderr
    assert f"as the reference of fraud v3 to {service}: 1200 rows" in up.stdout
    assert f"{service}/v1/models/fraud/drift?version=v3" in up.stdout
    # the token may come from the environment; names given on the command line win over the file's
    up2 = cli("reference", "upload", str(ref), "--model", "fraud", "--version", "v4 beta", "--to", service,
              env={"DRIFTLINE_API_TOKEN": TOKEN})
    assert up2.returncode == 0 and "fraud v4 beta" in up2.stdout, up2.stderr
    # build --upload: one step from training data
    data = tmp_path / "train.csv"
    x = rng.normal(size=500)
    data.write_text("amount,score\n" + "\n".join(f"{a:.4f},{1 / (1 + np.exp(-a)):.4f}" for a in x) + "\n")
    built = cli("reference", "build", str(data), "--model", "churn", "--version", "v1", "--output", "score",
                "--out", str(tmp_path / "churn.dlp"), "--upload", service, "--token", TOKEN)
    assert built.returncode == 0, built.stderr
    assert "wrote" in built.stdout and "as the reference of churn v1" in built.stdout and "(score)" in built.stdout
    # list: every model version with its reference, before any data arrived
    listed = cli("reference", "list", "--to", service)
    assert listed.returncode == 0, listed.stderr
    rows = [ln.split() for ln in listed.stdout.splitlines()]
    assert ["churn", "v1", "*", "uploaded", "500", "0", "no", "data", "yet"] in rows
    assert any(r[:2] == ["fraud", "v4"] for r in rows)
    as_json = json.loads(cli("reference", "list", "--to", service, "--model", "fraud", "--json").stdout)
    assert {v["version"] for v in as_json["versions"]} == {"v3", "v4 beta"}
    assert all(v["reference"]["rows"] == 1200 and v["has_reference"] for v in as_json["versions"])
    one_line_error(cli("reference", "list", "--to", service, "--model", "nope"), 2, "'nope'")


def test_bad_input_is_one_line_and_exit_2_an_unreachable_service_exit_1(tmp_path: Path) -> None:
    not_profile = tmp_path / "train.csv"
    not_profile.write_text("a,b\n1,2\n")
    one_line_error(cli("reference", "upload", str(not_profile), "--to", "http://127.0.0.1:9"), 2,
                   "not a Driftline profile file")
    one_line_error(cli("reference", "upload", str(tmp_path / "missing.dlp"), "--to", "http://127.0.0.1:9"), 2,
                   "cannot read")
    ref = tmp_path / "ref.dlp"
    ref.write_bytes(reference_bytes(np.random.default_rng(0), "m", "v1", n=50))
    for url in ("localhost:8000", "ftp://host/x", "http://host:port", "http://h:1/?x=1"):
        one_line_error(cli("reference", "upload", str(ref), "--to", url), 2, url)
    one_line_error(cli("reference", "upload", str(ref), "--to", f"http://127.0.0.1:{free_port()}"), 1,
                   "cannot reach the service")
    one_line_error(cli("reference", "list", "--to", f"http://127.0.0.1:{free_port()}"), 1, "cannot reach")
    missing = cli("reference", "upload", str(ref))
    assert missing.returncode == 2 and "--to" in missing.stderr  # argparse's own usage error
    for sub in ("upload", "list"):
        h = cli("reference", sub, "--help")
        assert h.returncode == 0 and "--to" in h.stdout and "--token" in h.stdout
    assert "--upload" in cli("reference", "build", "--help").stdout
