"""The README's Quickstart and "Using it" blocks, run as written against a real service and sidecar.

The commands are read from README.md itself, so the README cannot drift from what works: a command
this test does not know fails it. Only what a shared test machine needs is changed, and said here:
``localhost:8000`` / ``localhost:8471`` become free loopback ports (the service and the sidecar get
them from ``DRIFTLINE_PORT`` / ``DRIFTLINE_API__PORT`` / ``DRIFTLINE_TRANSPORT__HTTP__URL``, the
documented environment overrides, so the example configs stay unchanged), the sidecar's window is
2 s instead of 60 s, state goes to a temporary ``XDG_STATE_HOME``, and the demo runs 15 s on a free
port. The data is a small fraud-like table scored by a scikit-learn model trained here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.harness.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def commands(block: str) -> list[str]:
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def cli(argv: list[str]) -> list[str]:
    """``driftline ...`` as this interpreter's module (the console script of the same package)."""
    return [sys.executable, "-m", "driftline.apps.cli.main", *argv[1:]] if argv[0] == "driftline" else argv


# ---- the Quickstart ------------------------------------------------------------------------------------
def test_quickstart_is_two_commands_and_the_demo_does_what_it_says(tmp_path) -> None:
    quick = section("Quickstart")
    cmds = commands(blocks(quick, "bash")[0])
    assert cmds == ["python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[demo]' && driftline demo",
                    "bash scripts/test.sh"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^demo = \[", pyproject, re.M) and 'driftline = "driftline.apps.cli.main:main"' in pyproject
    # the second command: the script CI runs; it must parse, and it names each prerequisite the README does
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts/test.sh")]).returncode == 0
    script = (ROOT / "scripts/test.sh").read_text()
    for needed in ("prometheus", "prometheus-alertmanager", "chromium", "postgresql", "golang.org/toolchain"):
        assert needed in script
    for prerequisite in ("Python 3.11", "python3-venv", "Go 1.26", "apt-get"):
        assert prerequisite in quick
    # the first command's last step, on a free port and shorter
    port = free_port()
    demo = shlex.split(cmds[0].split("&&")[-1]) + ["--port", str(port), "--duration", "15"]
    proc = subprocess.run(cli(demo), capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # documented: the URLs while it runs (before the traffic), then a summary
    assert proc.stderr.index(f"service running: http://127.0.0.1:{port}/") < proc.stderr.index("windows shipped")
    assert f"model page     http://127.0.0.1:{port}/models/digits-camera" in proc.stderr
    assert "Driftline demo summary" in proc.stdout and "dataset drift" in proc.stdout
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "state"])  # nothing in the working directory


# ---- "Using it" ----------------------------------------------------------------------------------------
def make_data(d: Path) -> None:
    """train.parquet, today.parquet (amounts shifted) and logs.jsonl (recent, timestamped), scored by a model."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    countries = np.array(["NO", "SE", "DK", "FI"])

    def table(n: int, shift: float) -> pd.DataFrame:
        amount = rng.lognormal(3.0 + shift, 0.8, n)
        country = countries[rng.integers(0, 4, n)]
        return pd.DataFrame({"amount": amount, "country": country})

    train = table(4000, 0.0)
    x = np.column_stack([np.log(train.amount), (train.country == "NO").astype(float)])
    y = (x[:, 0] + rng.normal(0, 0.5, len(x)) > 3.4).astype(int)
    model = LogisticRegression().fit(x, y)

    def scored(df: pd.DataFrame) -> pd.DataFrame:
        xs = np.column_stack([np.log(df.amount), (df.country == "NO").astype(float)])
        df = df.copy()
        df["score"] = model.predict_proba(xs)[:, 1]
        df["label"] = model.predict(xs)
        return df

    scored(train).to_parquet(d / "train.parquet")
    today = scored(table(3000, 0.6))
    today.to_parquet(d / "today.parquet")
    today.to_csv(d / "today.csv", index=False)
    logs = scored(table(1500, 0.6))
    logs["ts"] = time.time() - 600 + np.sort(rng.uniform(0, 540, len(logs)))  # the last ten minutes
    logs.to_json(d / "logs.jsonl", orient="records", lines=True)


class Walkthrough:
    def __init__(self, d: Path) -> None:
        self.d = d
        self.svc, self.sc = free_port(), free_port()
        self.env = {**os.environ, "XDG_STATE_HOME": str(d / "state"), "DRIFTLINE_PORT": str(self.svc),
                    "DRIFTLINE_API__PORT": str(self.sc), "DRIFTLINE_TRANSPORT__HTTP__URL": f"http://127.0.0.1:{self.svc}",
                    "DRIFTLINE_WINDOW__SECONDS": "2", "DRIFTLINE_SHIPPER__BACKOFF_MAX_SECONDS": "1"}
        self.env.pop("DRIFTLINE_API_TOKEN", None)
        self.procs: list[tuple[subprocess.Popen[str], Path]] = []
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.svc}", timeout=30)

    def local(self, text: str) -> str:
        return (text.replace("http://localhost:8000", f"http://127.0.0.1:{self.svc}")
                .replace("localhost:8000", f"127.0.0.1:{self.svc}").replace("localhost:8471", f"127.0.0.1:{self.sc}"))

    def run(self, line: str, status: int = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(cli(shlex.split(self.local(line))), capture_output=True, text=True, timeout=180,
                              cwd=self.d, env=self.env)
        assert proc.returncode == status, f"{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        assert "Traceback" not in proc.stderr
        return proc

    def start(self, line: str) -> Path:
        log = self.d / f"{len(self.procs)}.log"
        with open(log, "w") as fh:
            proc = subprocess.Popen(cli(shlex.split(self.local(line))), stdout=fh, stderr=subprocess.STDOUT,
                                    text=True, cwd=self.d, env=self.env)
        self.procs.append((proc, log))
        return log

    def wait(self, what: str, check, timeout: float = 60.0):  # noqa: ANN001, ANN201
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            for proc, log in self.procs:
                assert proc.poll() is None, f"{proc.args} exited:\n{log.read_text()[-3000:]}"
            try:
                last = check()
                if last:
                    return last
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                last = exc
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}: {last!r}")

    def rows(self) -> int:
        found = [m for m in self.api.get("/v1/models").json()["models"] if m["name"] == "fraud"]
        return int(found[0]["rows"]) if found else 0

    def stop(self) -> None:
        self.api.close()
        for proc, _ in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


def test_using_it_as_written_from_training_data_to_drift_on_the_service(tmp_path) -> None:
    text = section("Using it")
    bash, python = blocks(text, "bash"), blocks(text, "python")
    assert len(bash) == 1 and len(python) == 1
    make_data(tmp_path)
    (tmp_path / "service").symlink_to(ROOT / "service")  # the example configs, unchanged, at their README paths
    (tmp_path / "edge_sidecar").symlink_to(ROOT / "edge_sidecar")
    w = Walkthrough(tmp_path)
    done: list[str] = []
    try:
        for line in commands(bash[0]):
            words = shlex.split(line)
            head = " ".join(words[:3])
            if head.startswith("driftline reference build"):
                out = w.run(line).stdout
                assert "wrote ref.dlp" in out and "2 outputs" in out and (tmp_path / "ref.dlp").stat().st_size > 0
            elif head.startswith("driftline profile inspect"):
                out = w.run(line).stdout
                assert "amount" in out and "country" in out and "score" in out and "4000" in out.replace(",", "")
            elif head.startswith("driftline drift") and "--fail-on-drift" in words:
                out = w.run(line, status=1).stdout  # today's amounts drifted: the CI gate fails
                assert "amount" in out
            elif head.startswith("driftline drift"):
                report = json.loads(w.run(line).stdout)
                amount = next(f for f in report["features"] if f["name"] == "amount")
                assert amount["drift_detected"] is True and report["dataset_drift"] is True
                assert {o["name"] for o in report["outputs"]} == {"score", "label"}
            elif head == "driftline service --config":
                log = w.start(line)
                w.wait("the service", lambda: w.api.get("/readyz").json()["status"] == "ready")
                w.wait("its URL", lambda log=log: f"driftline service on http://127.0.0.1:{w.svc}" in log.read_text())
            elif head == "driftline sidecar --config":
                w.start(line)
                health = w.wait("the sidecar", lambda: httpx.get(f"http://127.0.0.1:{w.sc}/healthz").json())
                assert health["device"] == "edge-0042"  # the example config's own values are in force
                assert health["spool"]["path"] == str(tmp_path / "state" / "driftline" / "sidecar" / "spool")
            elif head.startswith("driftline reference upload"):
                out = w.run(line).stdout
                assert "uploaded ref.dlp as the reference of fraud v3" in out
                assert w.api.get("/v1/models/fraud/references").json()["references"][0]["rows"] == 4000
            elif head.startswith("driftline reference list"):
                out = w.run(line).stdout
                assert re.search(r"^fraud\s+v3 \*\s+uploaded\s+4,000", out, re.M), out
            elif words[0] == "curl" and "/v1/observe" in line:
                before = w.rows()
                assert json.loads(subprocess.run(shlex.split(w.local(line)), capture_output=True, text=True,
                                                 timeout=30, check=True).stdout) == {"accepted": 1}
                w.wait("the sidecar's window at the service", lambda before=before: w.rows() == before + 1)
            elif words[0] == "curl" and line.endswith("/healthz"):
                health = json.loads(subprocess.run(shlex.split(w.local(line)), capture_output=True, text=True,
                                                   timeout=30, check=True).stdout)
                assert health["status"] == "ok" and health["reason"] is None and health["shipper"]["delivered"] >= 1
            elif head.startswith("driftline replay"):
                out = w.run(line).stdout
                assert "replayed 1500 rows of logs.jsonl" in out.replace(",", "")
            elif words[0] == "curl" and "/drift" in line:
                report = json.loads(subprocess.run(shlex.split(w.local(line)), capture_output=True, text=True,
                                                   timeout=60, check=True).stdout)
                assert report["version"] == "v3" and report["windows"] >= 2
                assert {o["name"] for o in report["outputs"]} == {"score", "label"}  # outputs, not new features
                assert {f["name"] for f in report["features"]} == {"amount", "country"}
                signals = {(i["column"], i["signal"]) for i in report["data_quality"]["issues"]}
                assert not {s for s in signals if s[1] in ("new_column", "missing_column")}, signals
                assert next(f for f in report["features"] if f["name"] == "amount")["drift_detected"] is True
            else:
                pytest.fail(f"README 'Using it' has a command this test does not run: {line}")
            done.append(head)
        # the Python block, as written but for the port, in a fresh interpreter (it closes at exit)
        before = w.rows()
        snippet = w.local(python[0])
        proc = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60,
                              cwd=tmp_path, env=w.env)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
        w.wait("the SDK's row at the service", lambda: w.rows() == before + 1, timeout=30)
        assert (tmp_path / "state" / "driftline" / "sdk" / "spool" / "0").is_dir()
    finally:
        w.stop()
    assert len(done) == len(commands(bash[0]))
    # nothing spooled into the working directory: only the inputs, the outputs the README names, the
    # example service config's SQLite database, and this test's own logs and state
    left = {p.name for p in tmp_path.iterdir()}
    assert left <= {"train.parquet", "today.parquet", "today.csv", "logs.jsonl", "ref.dlp", "service", "edge_sidecar", "state",
                    "driftline.sqlite", "driftline.sqlite-wal", "driftline.sqlite-shm", "0.log", "1.log"}, left


def test_the_example_configs_work_together_and_healthz_says_degraded_while_deliveries_fail(tmp_path) -> None:
    """Unchanged example files share port 8000; with no service the sidecar says why nothing arrives."""
    import yaml

    service = yaml.safe_load((ROOT / "service/config.example.yaml").read_text())
    sidecar = yaml.safe_load((ROOT / "edge_sidecar/sidecar.example.yaml").read_text())
    assert sidecar["transport"]["http"]["url"] == f"http://{service['host']}:{service['port']}"
    (tmp_path / "service").symlink_to(ROOT / "service")
    (tmp_path / "edge_sidecar").symlink_to(ROOT / "edge_sidecar")
    w = Walkthrough(tmp_path)
    try:
        w.start("driftline sidecar --config edge_sidecar/sidecar.example.yaml")
        w.wait("the sidecar", lambda: httpx.get(f"http://127.0.0.1:{w.sc}/healthz").status_code == 200)
        row = {"model": "fraud", "model_version": "v3", "features": {"amount": 1.0}, "outputs": {"score": 0.5}}
        assert httpx.post(f"http://127.0.0.1:{w.sc}/v1/observe", json=row).json() == {"accepted": 1}
        health = w.wait("degraded", lambda: (h := httpx.get(f"http://127.0.0.1:{w.sc}/healthz").json())
                        ["status"] == "degraded" and h)
        assert "deliveries over http are failing" in health["reason"] and str(w.svc) in health["reason"]
        assert health["spool"]["pending"] >= 1
        w.start("driftline service --config service/config.example.yaml")
        w.wait("recovery", lambda: httpx.get(f"http://127.0.0.1:{w.sc}/healthz").json()["status"] == "ok",
               timeout=90)
        health = httpx.get(f"http://127.0.0.1:{w.sc}/healthz").json()
        assert health["reason"] is None and health["shipper"]["delivered"] >= 1 and health["spool"]["pending"] == 0
        assert w.rows() == 1
    finally:
        w.stop()


def test_getting_started_commands_exist_and_its_prometheus_config_is_valid(tmp_path, prometheus_binaries) -> None:
    """docs/getting-started.md: every driftline command it shows parses, and its prometheus.yml passes promtool."""
    guide = (ROOT / "docs/getting-started.md").read_text(encoding="utf-8")
    for heading in ("training data", "reference", "SDK", "Prometheus", "Grafana", "alert"):
        assert re.search(rf"^## \d\. .*{heading}", guide, re.M | re.I), heading
    config = re.search(r"`prometheus.yml`:\n\n```yaml\n(.*?)```", guide, re.S)
    assert config is not None
    (tmp_path / "prometheus.yml").write_text(config.group(1))
    (tmp_path / "alerts").symlink_to(ROOT / "alerts")
    check = subprocess.run([str(prometheus_binaries.promtool), "check", "config", "prometheus.yml"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and re.search(r"SUCCESS: [1-9]\d* rules found", check.stdout), check.stdout + check.stderr
    shown = set()
    for block in blocks(guide, "bash"):
        for line in commands(block):
            words = shlex.split(line.split(" #")[0])
            words = [w for w in words if "=" not in w or w.startswith("-")]  # VAR=value prefixes
            if words and words[0] == "driftline":
                shown.add(tuple(words[1:3]))
                # each command's options exist: --help of its subcommand names every option used
                sub = [w for w in words[1:] if not w.startswith("-")][:2 if words[1] in (
                    "reference", "profile", "dashboards") else 1]
                helptext = subprocess.run(cli(["driftline", *sub, "--help"]), capture_output=True, text=True,
                                          timeout=60).stdout
                for opt in (w.split("=")[0] for w in words if w.startswith("--")):
                    assert opt in helptext, (line, opt)
    assert {("reference", "build"), ("reference", "upload"), ("dashboards", "push")} <= shown
