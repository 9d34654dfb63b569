"""Helm charts: lint and template with default and full values, and check what the manifests say."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from driftline.service.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "driftline"
FULL = CHART / "ci" / "full-values.yaml"
pytestmark = pytest.mark.helm


def helm() -> str:
    for cand in (os.environ.get("HELM"), shutil.which("helm"), str(Path.home() / ".cache/driftline/bin/helm"),
                 str(Path.home() / "go/bin/helm"), "/tmp/gobin/helm"):
        if cand and Path(cand).is_file():
            return cand
    pytest.fail("helm is not installed: go install helm.sh/helm/v3/cmd/helm@v3.22.0 (scripts/test.sh does)",
                pytrace=False)


def run(*args: str) -> str:
    proc = subprocess.run([helm(), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def render(values: Path | None = None) -> list[dict]:
    args = ["template", "rel", str(CHART), "--namespace", "driftline"]
    if values:
        args += ["-f", str(values)]
    return [d for d in yaml.safe_load_all(run(*args)) if d]


def by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


@pytest.mark.parametrize("values", [None, FULL], ids=["default", "full"])
def test_lint_and_template(values: Path | None) -> None:
    run("lint", "--strict", str(CHART), *(["-f", str(values)] if values else []))
    kinds = by_kind(render(values))
    dep = kinds["Deployment"][0]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {v["name"] for v in pod["volumes"]} >= {"config", "data", "tmp"}
    assert kinds["Service"][0]["spec"]["ports"][0]["port"] == 8000
    assert kinds["ServiceMonitor"][0]["spec"]["endpoints"][0]["path"] == "/metrics"
    rules = kinds["PrometheusRule"][0]["spec"]["groups"]
    assert rules == yaml.safe_load((ROOT / "alerts" / "driftline-rules.yml").read_text())["groups"]
    dashboards = [d for d in kinds["ConfigMap"] if d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(dashboards) == 4
    config = next(d for d in kinds["ConfigMap"] if d["metadata"]["name"].endswith("-config"))
    cfg_file = ROOT / "test-artifacts" / "helm-config.yaml"
    cfg_file.parent.mkdir(exist_ok=True)
    cfg_file.write_text(config["data"]["config.yaml"])
    settings = load_settings(cfg_file)  # the rendered settings file is valid for the service
    assert settings.host == "0.0.0.0" and settings.port == 8000


def test_full_values_wire_every_option() -> None:
    kinds = by_kind(render(FULL))
    env = {e["name"]: e for e in kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DRIFTLINE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "driftline-db", "key": "database-url"}
    assert env["DRIFTLINE_KAFKA__ENABLED"]["value"] == "true"
    assert env["DRIFTLINE_KAFKA__SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["DRIFTLINE_KAFKA__SASL_PLAIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "driftline-kafka"
    assert env["DRIFTLINE_KAFKA__SSL_CAFILE"]["value"].endswith("ca.crt")
    assert env["DRIFTLINE_API_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "api-token"
    assert env["DRIFTLINE_RETRAIN__SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "driftline-retrain"
    assert kinds["HorizontalPodAutoscaler"][0]["spec"]["maxReplicas"] == 5
    assert "replicas" not in kinds["Deployment"][0]["spec"]  # the HPA owns the replica count
    assert kinds["PodDisruptionBudget"][0]["spec"]["minAvailable"] == 1
    assert kinds["NetworkPolicy"][0]["spec"]["ingress"][0]["from"]
    assert kinds["Secret"][0]["stringData"]["api-token"] == "test-token"
    defaults = by_kind(render(None))
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Secret"):
        assert kind not in defaults


def test_chart_copies_of_rules_and_dashboards_are_current() -> None:
    assert (CHART / "files" / "driftline-rules.yml").read_text() == (ROOT / "alerts" / "driftline-rules.yml").read_text()
    for f in (ROOT / "dashboards").glob("*.json"):
        assert (CHART / "files" / "dashboards" / f.name).read_text() == f.read_text(), "run scripts/sync-chart-files.sh"


def test_examples_are_valid_yaml_with_the_gate_urls() -> None:
    flagger = yaml.safe_load((ROOT / "helm/examples/flagger/canary.yaml").read_text())
    hooks = {h["type"]: h["url"] for h in flagger["spec"]["analysis"]["webhooks"]}
    assert hooks["confirm-promotion"].endswith("/canary/gate/promote")
    assert hooks["rollback"].endswith("/canary/gate/rollback")
    argo = list(yaml.safe_load_all((ROOT / "helm/examples/argo-rollouts/analysis-template.yaml").read_text()))
    metric = argo[0]["spec"]["metrics"][0]
    assert metric["provider"]["web"]["url"].endswith("/canary/argo")
    assert "result.rollback" in metric["failureCondition"]
    kserve = list(yaml.safe_load_all((ROOT / "helm/examples/kserve-sidecar.yaml").read_text()))
    sidecar = kserve[1]["spec"]["predictor"]["containers"][0]
    assert sidecar["args"][:1] == ["sidecar"] and sidecar["securityContext"]["readOnlyRootFilesystem"]
    from driftline.edge_sidecar.settings import SidecarSettings

    SidecarSettings(**yaml.safe_load(kserve[0]["data"]["sidecar.yaml"]))  # the sidecar accepts its config
