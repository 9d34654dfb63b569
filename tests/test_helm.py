"""Helm charts: lint and template with default and full values, and check what the manifests say.

The rendered settings file plus the container's DRIFTLINE_* environment (secrets replaced by
placeholders) must load into the service's own settings object, so a renamed setting breaks here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from driftline.dashboards import checked_in
from driftline.dashboards.common import DEFAULT_SERVICE_URL
from driftline.service.settings import ServiceSettings, load_settings

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "driftline"
FULL = CHART / "ci" / "full-values.yaml"
pytestmark = pytest.mark.helm


def helm() -> str:
    for cand in (os.environ.get("HELM"), shutil.which("helm"), str(Path.home() / ".cache/driftline/bin/helm"),
                 str(Path.home() / "go/bin/helm"), "/tmp/gobin/helm"):
        if cand and Path(cand).is_file():
            return cand
    pytest.fail("helm is not installed: go install helm.sh/helm/v3/cmd/helm@v3.22.0 (scripts/test.sh does), "
                "or point $HELM at the binary", pytrace=False)


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([helm(), *args], capture_output=True, text=True, timeout=120)
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


# The chart refuses to render without an API token or an explicit `insecure: true` (the service would
# refuse to listen); renders of the defaults say insecure=true unless they give a token.
OPEN = "insecure=true"


def render(values: Path | None = None, *sets: str) -> list[dict]:
    args = ["template", "rel", str(CHART), "--namespace", "driftline"]
    if values:
        args += ["-f", str(values)]
    elif not any(s.startswith("apiToken.") for s in sets):
        sets = (OPEN, *sets)
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(run(*args).stdout) if d]


def by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def container(kinds: dict[str, list[dict]]) -> dict:
    return kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]


def _field_exists(path: list[str]) -> bool:
    model: type[BaseModel] | None = ServiceSettings
    for part in path:
        if model is None or part not in model.model_fields:
            return False
        ann = model.model_fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return True


def loaded_settings(kinds: dict[str, list[dict]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ServiceSettings:
    """The service's settings as the pod would load them: the ConfigMap file and the container env."""
    config = next(d for d in kinds["ConfigMap"] if d["metadata"]["name"].endswith("-config"))
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(config["data"]["config.yaml"])
    for e in container(kinds)["env"]:
        if not e["name"].startswith("DRIFTLINE_"):
            continue
        path = e["name"].removeprefix("DRIFTLINE_").lower().split("__")
        assert _field_exists(path), f"{e['name']} names no field of ServiceSettings"
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        monkeypatch.setenv(e["name"], f"secret:{ref['name']}/{ref['key']}" if ref else e["value"])
    return load_settings(cfg_file)


@pytest.mark.parametrize("values", [None, FULL], ids=["default", "full"])
def test_lint_and_template(values: Path | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run("lint", "--strict", str(CHART), *(["-f", str(values)] if values else ["--set", OPEN]))
    kinds = by_kind(render(values))
    dep = kinds["Deployment"][0]
    pod = dep["spec"]["template"]["spec"]
    c = container(kinds)
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    empty = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    writable = {m["name"] for m in c["volumeMounts"] if not m.get("readOnly")}
    assert writable <= empty and {m["mountPath"] for m in c["volumeMounts"]} >= {"/tmp", "/var/lib/driftline"}
    # labels: every object carries the chart's labels; selectors find the pods
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    for doc in (d for docs in kinds.values() for d in docs):
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "rel", doc["kind"]
        assert doc["metadata"]["labels"]["helm.sh/chart"].startswith("driftline-"), doc["kind"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    svc = kinds["Service"][0]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["ports"][0] == {"name": "http", "port": 8000, "targetPort": "http"}
    sm = kinds["ServiceMonitor"][0]["spec"]
    assert sm["endpoints"][0]["path"] == "/metrics" and sm["endpoints"][0]["port"] == "http"
    assert sm["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    rules = kinds["PrometheusRule"][0]["spec"]["groups"]
    assert rules == yaml.safe_load((ROOT / "alerts" / "driftline-rules.yml").read_text())["groups"]
    dashboards = {d["metadata"]["name"]: d for d in kinds["ConfigMap"]
                  if d["metadata"]["labels"].get("grafana_dashboard") == "1"}
    assert len(dashboards) == 4
    settings = loaded_settings(kinds, tmp_path, monkeypatch)  # what the pod's service would run with
    assert settings.host == "0.0.0.0" and settings.port == 8000


def test_dashboard_configmaps_carry_the_generated_json_and_the_public_url() -> None:
    for values, url in ((None, DEFAULT_SERVICE_URL), (FULL, "https://driftline.example.com")):
        maps = [d for d in by_kind(render(values))["ConfigMap"] if d["metadata"]["labels"].get("grafana_dashboard")]
        for name, text in checked_in().items():
            cm = next(d for d in maps if d["metadata"]["name"] == f"rel-driftline-dashboard-{name}")
            shipped = json.loads(cm["data"][f"driftline-{name}.json"])
            expected = json.loads(text.replace(json.dumps(DEFAULT_SERVICE_URL), json.dumps(url)))
            assert shipped == expected, name
            service_url = next(v for v in shipped["templating"]["list"] if v["name"] == "service_url")
            assert service_url["query"] == url


def test_full_values_wire_every_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kinds = by_kind(render(FULL))
    env = {e["name"]: e for e in container(kinds)["env"]}
    assert env["DRIFTLINE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "driftline-db", "key": "database-url"}
    assert env["DRIFTLINE_KAFKA__SASL_PLAIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "driftline-kafka", "key": "sasl-password"}
    assert env["DRIFTLINE_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "rel-driftline-secrets", "key": "api-token"}
    assert env["DRIFTLINE_RETRAIN__SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "driftline-retrain"
    s = loaded_settings(kinds, tmp_path, monkeypatch)
    assert s.database_url == "secret:driftline-db/database-url"
    assert s.kafka.enabled and s.kafka.bootstrap_servers == ["kafka-0.kafka:9093", "kafka-1.kafka:9093"]
    assert s.kafka.security_protocol == "SASL_SSL" and s.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert s.kafka.sasl_plain_username == "driftline"
    assert s.kafka.sasl_plain_password.get_secret_value() == "secret:driftline-kafka/sasl-password"
    assert (s.kafka.ssl_cafile, s.kafka.ssl_certfile, s.kafka.ssl_keyfile) == (
        "/etc/driftline/kafka-tls/ca.crt", "/etc/driftline/kafka-tls/tls.crt", "/etc/driftline/kafka-tls/tls.key")
    assert s.api_token.get_secret_value() == "secret:rel-driftline-secrets/api-token"
    assert s.retrain.secret.get_secret_value() == "secret:driftline-retrain/retrain-secret"
    assert s.retrain.targets[0].kind == "argo_events" and s.canaries[0].canary_version == "v4"
    assert s.cohort_top_n == 50 and s.public_url == "https://driftline.example.com/"
    assert s.evaluation.critical_features == {"fraud": ["amount"]}
    pod = kinds["Deployment"][0]["spec"]["template"]["spec"]
    tls = next(v for v in pod["volumes"] if v["name"] == "kafka-tls")
    assert tls["secret"]["secretName"] == "driftline-kafka-tls"
    assert {"name": "kafka-tls", "mountPath": "/etc/driftline/kafka-tls", "readOnly": True} in container(kinds)[
        "volumeMounts"]
    hpa = kinds["HorizontalPodAutoscaler"][0]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rel-driftline"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert "replicas" not in kinds["Deployment"][0]["spec"]  # the HPA owns the replica count
    pdb = kinds["PodDisruptionBudget"][0]["spec"]
    assert pdb["minAvailable"] == 1 and pdb["selector"]["matchLabels"].items() <= pod_labels(kinds).items()
    netpol = kinds["NetworkPolicy"][0]["spec"]
    assert netpol["podSelector"]["matchLabels"].items() <= pod_labels(kinds).items()
    assert netpol["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]
    assert kinds["Secret"][0]["stringData"] == {"api-token": "test-token"}  # the others are existing Secrets
    assert kinds["ServiceMonitor"][0]["metadata"]["labels"]["release"] == "kube-prometheus"
    assert kinds["PrometheusRule"][0]["metadata"]["labels"]["release"] == "kube-prometheus"
    defaults = by_kind(render(None))
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Secret"):
        assert kind not in defaults
    assert not [e for e in container(defaults)["env"] if e["name"].startswith("DRIFTLINE_KAFKA")]


def pod_labels(kinds: dict[str, list[dict]]) -> dict:
    return kinds["Deployment"][0]["spec"]["template"]["metadata"]["labels"]


def test_a_secret_made_by_the_chart_from_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kinds = by_kind(render(None, "postgresql.enabled=true", "postgresql.url=postgresql://u:p@db:5432/d",
                           "retrainSecret.value=hmac"))
    assert kinds["Secret"][0]["stringData"] == {"database-url": "postgresql://u:p@db:5432/d", "retrain-secret": "hmac"}
    env = {e["name"]: e for e in container(kinds)["env"]}
    assert env["DRIFTLINE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "rel-driftline-secrets",
                                                                          "key": "database-url"}
    assert "database_url" not in kinds["ConfigMap"][0]["data"]["config.yaml"]  # no SQLite path with PostgreSQL


@pytest.mark.parametrize(("sets", "message"), [
    (["replicaCount=2"], "need postgresql.enabled=true"),
    (["autoscaling.enabled=true"], "need postgresql.enabled=true"),
    (["postgresql.enabled=true"], "postgresql.existingSecret"),
    (["kafka.enabled=true", "kafka.sasl.mechanism=PLAIN", "kafka.bootstrapServers={k:9092}"],
     "kafka.sasl.existingSecret is required"),
    (["replicaCont=2"], "additional properties 'replicaCont' not allowed"),  # values.schema.json: typos
    (["kafka.securityProtocol=TLS"], "value must be one of"),
    (["publicUrl=driftline.example.com"], "publicUrl"),
    ([], "set apiToken.existingSecret or apiToken.value"),
    (["apiToken.value=t", "config.retrain.targets[0].name=a", "config.retrain.targets[0].url=http://x"],
     "config.retrain.targets need retrainSecret"),
])
def test_unsafe_values_are_refused_with_a_reason(sets: list[str], message: str) -> None:
    args = ["template", "rel", str(CHART)]
    if sets and not any(s.startswith("apiToken.") for s in sets):
        sets = [OPEN, *sets]
    for s in sets:
        args += ["--set", s]
    proc = run(*args, ok=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_chart_copies_of_rules_and_dashboards_are_current() -> None:
    files = CHART / "files"
    assert (files / "driftline-rules.yml").read_text() == (ROOT / "alerts" / "driftline-rules.yml").read_text(), (
        "run scripts/sync-chart-files.sh")
    assert sorted(p.name for p in (files / "dashboards").glob("*.json")) == sorted(f"{n}.json" for n in checked_in())
    for name, text in checked_in().items():
        assert (files / "dashboards" / f"{name}.json").read_text() == text, "run scripts/sync-chart-files.sh"


def test_examples_are_valid_yaml_with_the_gate_urls() -> None:
    flagger = yaml.safe_load((ROOT / "helm/examples/flagger/canary.yaml").read_text())
    hooks = {h["type"]: h["url"] for h in flagger["spec"]["analysis"]["webhooks"]}
    assert hooks["confirm-promotion"].endswith("/canary/gate/promote")
    assert hooks["rollback"].endswith("/canary/gate/rollback")
    argo = list(yaml.safe_load_all((ROOT / "helm/examples/argo-rollouts/analysis-template.yaml").read_text()))
    metric = argo[0]["spec"]["metrics"][0]
    assert metric["provider"]["web"]["url"].endswith("/canary/argo")
    assert "result.rollback" in metric["failureCondition"]


def test_kserve_example_routes_inference_through_the_sidecar() -> None:
    from driftline.edge_sidecar.settings import SidecarSettings

    docs = list(yaml.safe_load_all((ROOT / "helm/examples/kserve-sidecar.yaml").read_text()))
    config, isvc = docs[0], docs[1]
    assert isvc["kind"] == "InferenceService"
    containers = {c["name"]: c for c in isvc["spec"]["predictor"]["containers"]}
    model, sidecar = containers["kserve-container"], containers["driftline-sidecar"]
    assert list(containers)[0] == "kserve-container"  # KServe's main container comes first
    # Knative routes to the single container that declares a port: the sidecar's proxy
    assert [n for n, c in containers.items() if c.get("ports")] == ["driftline-sidecar"]
    settings = SidecarSettings(**yaml.safe_load(config["data"]["sidecar.yaml"]))  # the sidecar accepts its config
    assert settings.proxy.enabled and [p["containerPort"] for p in sidecar["ports"]] == [settings.proxy.port]
    assert settings.proxy.upstream == "http://127.0.0.1:8080" and "--http_port=8080" in model["args"]
    assert settings.api.observe is False  # its non-loopback port serves /metrics and /healthz only
    assert sidecar["args"][:1] == ["sidecar"] and "port" not in sidecar["readinessProbe"]["httpGet"]
    sc = sidecar["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"] and sc["capabilities"]["drop"] == ["ALL"]
    assert sidecar["resources"]["limits"]["memory"]
    volumes = {v["name"]: v for v in isvc["spec"]["predictor"]["volumes"]}
    for m in sidecar["volumeMounts"]:  # every writable path is an emptyDir
        assert m.get("readOnly") or "emptyDir" in volumes[m["name"]], m
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    assert "emptyDir" in volumes[mounts[str(settings.spool.path)]]
