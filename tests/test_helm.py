"""Helm charts: lint and template with default and full values, and check what the manifests say.

The rendered settings file plus the container's DRIFTLINE_* environment (secrets replaced by
placeholders) must load into the service's own settings object, so a renamed setting breaks here.
Every rendered manifest is decoded strictly into the Kubernetes and prometheus-operator Go types
(tests/k8s-validate, built here through the Go module proxy), with misspelt fields as controls;
the examples must name the Service the chart creates; the values README must be the generated one.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from driftline.dashboards import checked_in
from driftline.dashboards.common import DEFAULT_SERVICE_URL
from driftline.service.settings import ServiceSettings, load_settings
from tests.harness.gobuilds import wait_for_go_builds

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "driftline"
FULL = CHART / "ci" / "full-values.yaml"
VALIDATOR = ROOT / "tests" / "k8s-validate"
# the prometheus-operator kinds the chart renders only where the cluster serves them
CRDS = ("monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule",
        "monitoring.coreos.com/v1alpha1/AlertmanagerConfig")
pytestmark = pytest.mark.helm


def helm() -> str:
    wait_for_go_builds()
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


def template(values: Path | None = None, *sets: str, release: str = "rel", namespace: str = "driftline",
             crds: tuple[str, ...] = CRDS) -> str:
    """`helm template` output; `crds` are the API kinds the pretend cluster serves (--api-versions)."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    if values:
        args += ["-f", str(values)]
    for s in sets:
        args += ["--set", s]
    for gvk in crds:
        args += ["--api-versions", gvk]
    return run(*args).stdout


def render(values: Path | None = None, *sets: str, **kw: Any) -> list[dict]:
    return [d for d in yaml.safe_load_all(template(values, *sets, **kw)) if d]


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
    run("lint", "--strict", str(CHART), *(["-f", str(values)] if values else []))
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
    scratch = {v["name"] for v in pod["volumes"] if "emptyDir" in v or "persistentVolumeClaim" in v}
    writable = {m["name"] for m in c["volumeMounts"] if not m.get("readOnly")}
    assert writable <= scratch and {m["mountPath"] for m in c["volumeMounts"]} >= {"/tmp", "/var/lib/driftline"}
    # labels: every object carries the chart's labels; selectors find the pods
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    for doc in (d for docs in kinds.values() for d in docs):
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "rel", doc["kind"]
        assert doc["metadata"]["labels"]["helm.sh/chart"].startswith("driftline-"), doc["kind"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    svc = kinds["Service"][0]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["ports"][0] == {"name": "http", "port": 8000, "targetPort": "http"}
    for doc in (d for docs in kinds.values() for d in docs):  # `helm template | kubectl apply` lands in place
        assert doc["metadata"]["namespace"] == ("monitoring" if doc["kind"] == "ServiceMonitor" and values else
                                                "driftline"), doc["kind"]
    sm = kinds["ServiceMonitor"][0]["spec"]
    assert sm["endpoints"][0]["path"] == "/metrics" and sm["endpoints"][0]["port"] == "http"
    assert sm["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    if values is None:  # the rules of alerts/, each alert labelled with the release's namespace, the job its own
        rules = kinds["PrometheusRule"][0]["spec"]["groups"]
        source = (ROOT / "alerts" / "driftline-rules.yml").read_text()
        expected = yaml.safe_load(source.replace('job="driftline"', 'job="rel-driftline"'))["groups"]
        for group in expected:
            for rule in group["rules"]:
                if "alert" in rule:
                    rule["labels"] = {**rule.get("labels", {}), "namespace": "driftline"}
        assert rules == expected
    dashboards = {d["metadata"]["name"]: d for d in kinds["ConfigMap"]
                  if d["metadata"]["labels"].get("grafana_dashboard") == "1"}
    assert len(dashboards) == len(checked_in()) == 5
    settings = loaded_settings(kinds, tmp_path, monkeypatch)  # what the pod's service would run with
    assert settings.host == "0.0.0.0" and settings.port == 8000


def test_dashboard_configmaps_carry_the_generated_json_and_the_public_url() -> None:
    for values, url in ((None, DEFAULT_SERVICE_URL), (FULL, "https://driftline.example.com")):
        maps = [d for d in by_kind(render(values))["ConfigMap"] if d["metadata"]["labels"].get("grafana_dashboard")]
        for name, text in checked_in().items():
            prefix = "rel-dl" if values else "rel-driftline"  # full values set nameOverride: dl
            cm = next(d for d in maps if d["metadata"]["name"] == f"{prefix}-dashboard-{name}")
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
    assert env["DRIFTLINE_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "driftline-auth", "key": "token"}
    assert env["DRIFTLINE_RETRAIN__SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "driftline-auth", "key": "hmac"}
    s = loaded_settings(kinds, tmp_path, monkeypatch)
    assert s.database_url == "secret:driftline-db/database-url"
    assert s.kafka.enabled and s.kafka.bootstrap_servers == ["kafka-0.kafka:9093", "kafka-1.kafka:9093"]
    assert s.kafka.security_protocol == "SASL_SSL" and s.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert s.kafka.sasl_plain_username == "driftline"
    assert s.kafka.sasl_plain_password.get_secret_value() == "secret:driftline-kafka/sasl-password"
    assert (s.kafka.ssl_cafile, s.kafka.ssl_certfile, s.kafka.ssl_keyfile) == (
        "/etc/driftline/kafka-tls/ca.crt", "/etc/driftline/kafka-tls/tls.crt", "/etc/driftline/kafka-tls/tls.key")
    assert s.api_token.get_secret_value() == "secret:driftline-auth/token"
    assert s.retrain.secret.get_secret_value() == "secret:driftline-auth/hmac"
    assert s.retrain.targets[0].kind == "argo_events" and s.canaries[0].canary_version == "v4"
    assert s.cohort_top_n == 50 and s.public_url == "https://driftline.example.com/"
    assert s.evaluation.critical_features == {"fraud": ["amount"]}
    pod = kinds["Deployment"][0]["spec"]["template"]["spec"]
    tls = next(v for v in pod["volumes"] if v["name"] == "kafka-tls")
    assert tls["secret"]["secretName"] == "driftline-kafka-tls"
    assert {"name": "kafka-tls", "mountPath": "/etc/driftline/kafka-tls", "readOnly": True} in container(kinds)[
        "volumeMounts"]
    hpa = kinds["HorizontalPodAutoscaler"][0]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rel-dl"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert "replicas" not in kinds["Deployment"][0]["spec"]  # the HPA owns the replica count
    pdb = kinds["PodDisruptionBudget"][0]["spec"]
    assert pdb["minAvailable"] == 1 and pdb["selector"]["matchLabels"].items() <= pod_labels(kinds).items()
    netpol = kinds["NetworkPolicy"][0]["spec"]
    assert netpol["podSelector"]["matchLabels"].items() <= pod_labels(kinds).items()
    assert netpol["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]
    assert "Secret" not in kinds  # every secret is an existing Secret
    assert "PersistentVolumeClaim" not in kinds  # PostgreSQL holds the data
    assert kinds["ServiceMonitor"][0]["metadata"]["labels"]["release"] == "kube-prometheus"
    assert kinds["PrometheusRule"][0]["metadata"]["labels"]["release"] == "kube-prometheus"
    defaults = by_kind(render(None))
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Ingress"):
        assert kind not in defaults
    assert not [e for e in container(defaults)["env"] if e["name"].startswith("DRIFTLINE_KAFKA")]


def pod_labels(kinds: dict[str, list[dict]]) -> dict:
    return kinds["Deployment"][0]["spec"]["template"]["metadata"]["labels"]


def secret_data(kinds: dict[str, list[dict]]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in kinds["Secret"][0]["data"].items()}


def test_secrets_are_made_from_values_or_generated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kinds = by_kind(render(None, "postgresql.enabled=true", "postgresql.url=postgresql://u:p@db:5432/d",
                           "auth.retrainSecret=hmac"))
    data = secret_data(kinds)
    assert data["database-url"] == "postgresql://u:p@db:5432/d" and data["retrain-secret"] == "hmac"
    assert re.fullmatch(r"[A-Za-z0-9]{32}", data["write-token"])  # not given: generated
    env = {e["name"]: e for e in container(kinds)["env"]}
    assert env["DRIFTLINE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "rel-driftline", "key": "database-url"}
    assert env["DRIFTLINE_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "rel-driftline", "key": "write-token"}
    assert "database_url" not in kinds["ConfigMap"][0]["data"]["config.yaml"]  # no SQLite path with PostgreSQL
    first, second = secret_data(by_kind(render())), secret_data(by_kind(render()))
    for key in ("write-token", "retrain-secret"):  # random per fresh install (no Secret in the cluster yet)
        assert re.fullmatch(r"[A-Za-z0-9]{32}", first[key]) and first[key] != second[key]
    assert secret_data(by_kind(render(None, "auth.writeToken=given")))["write-token"] == "given"
    off = by_kind(render(None, "auth.enabled=false", "insecure=true"))
    assert "Secret" not in off and not [e for e in container(off)["env"] if e["name"] == "DRIFTLINE_API_TOKEN"]
    receiver = off["AlertmanagerConfig"][0]["spec"]["receivers"][0]["webhookConfigs"][0]
    assert "httpConfig" not in receiver  # no token to present


@pytest.mark.parametrize(("sets", "message"), [
    (["replicaCount=2"], "need postgresql.enabled=true"),
    (["autoscaling.enabled=true"], "need postgresql.enabled=true"),
    (["postgresql.enabled=true"], "postgresql.existingSecret"),
    (["kafka.enabled=true", "kafka.sasl.mechanism=PLAIN", "kafka.bootstrapServers={k:9092}"],
     "kafka.sasl.existingSecret is required"),
    (["auth.existingSecret=s", "auth.writeToken=t"], "exclude each other"),
    (["prometheusRule.disabled.DriftlineStale=true"], "prometheusRule.disabled: no alert DriftlineStale"),
    (["prometheusRule.alerts.DriftlineNope.for=5m"], "prometheusRule.alerts: no alert DriftlineNope"),
    (["replicaCont=2"], "additional properties 'replicaCont' not allowed"),  # values.schema.json: typos
    (["livenessProbe.periodSecond=5"], "additional properties 'periodSecond' not allowed"),
    (["persistence.accessModes={ReadWriteSome}"], "value must be one of"),
    (["serviceMonitor.scrapeTimeout=ten"], "scrapeTimeout"),
    (["kafka.securityProtocol=TLS"], "value must be one of"),
    (["publicUrl=driftline.example.com"], "publicUrl"),
    (["auth.enabled=false"], "auth.enabled=false needs insecure: true"),
])
def test_unsafe_values_are_refused_with_a_reason(sets: list[str], message: str) -> None:
    args = ["template", "rel", str(CHART)]
    for s in sets:
        args += ["--set", s]
    for gvk in CRDS:
        args += ["--api-versions", gvk]
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
    """Shape only; what the controllers do with these files is tested by tests/test_controllers.py."""
    flagger = list(yaml.safe_load_all((ROOT / "helm/examples/flagger/canary.yaml").read_text()))
    hooks = {h["type"]: h["url"] for h in flagger[0]["spec"]["analysis"]["webhooks"]}
    assert hooks["pre-rollout"].endswith("/canary/gate/check") and hooks["rollout"].endswith("/canary/gate/check")
    assert hooks["confirm-promotion"].endswith("/canary/gate/promote")
    assert hooks["rollback"].endswith("/canary/gate/rollback")
    assert flagger[1]["kind"] == "MetricTemplate" and "driftline_canary_verdict" in flagger[1]["spec"]["query"]
    argo = list(yaml.safe_load_all((ROOT / "helm/examples/argo-rollouts/analysis-template.yaml").read_text()))
    metric = argo[0]["spec"]["metrics"][0]
    assert "/canary/argo?rollout={{args.rollout}}" in metric["provider"]["web"]["url"]
    assert metric["consecutiveSuccessLimit"] == 1 and metric["failureLimit"] == 0
    assert metric["inconclusiveLimit"] >= metric["count"]  # "continue" never ends the run, let alone as success


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


# --- names, guards, persistence, pods -------------------------------------------------------------

@pytest.mark.parametrize(("release", "sets", "fullname"), [
    ("driftline", (), "driftline"),                 # the examples' driftline.driftline.svc
    ("rel", (), "rel-driftline"),
    ("prod-driftline", (), "prod-driftline"),       # a release name holding the chart name is kept
    ("rel", ("nameOverride=dl",), "rel-dl"),
    ("rel", ("fullnameOverride=drift",), "drift"),
])
def test_resource_names_follow_the_overrides(release: str, sets: tuple[str, ...], fullname: str) -> None:
    kinds = by_kind(render(None, *sets, release=release))
    assert kinds["Service"][0]["metadata"]["name"] == fullname
    assert kinds["Deployment"][0]["metadata"]["name"] == fullname
    for doc in (d for docs in kinds.values() for d in docs):
        assert doc["metadata"]["name"].startswith(fullname), doc["metadata"]["name"]
    name = "dl" if "nameOverride=dl" in sets else "driftline"
    assert kinds["Service"][0]["spec"]["selector"]["app.kubernetes.io/name"] == name


def test_operator_kinds_render_only_where_the_cluster_serves_them() -> None:
    wanted = {"ServiceMonitor", "PrometheusRule", "AlertmanagerConfig"}
    assert not wanted & by_kind(render(crds=())).keys()  # plain cluster: installs without the operator
    for gvk in CRDS:
        kinds = by_kind(render(crds=(gvk,)))
        assert wanted & kinds.keys() == {gvk.rsplit("/", 1)[1]}
    assert not wanted & by_kind(render(None, "serviceMonitor.enabled=false", "prometheusRule.enabled=false",
                                       "alertmanagerConfig.enabled=false")).keys()


def test_sqlite_sits_on_a_persistent_volume_by_default() -> None:
    kinds = by_kind(render())
    pvc = kinds["PersistentVolumeClaim"][0]
    assert pvc["metadata"]["name"] == "rel-driftline-data"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"  # uninstall keeps the data
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"] and pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert "storageClassName" not in pvc["spec"]
    dep = kinds["Deployment"][0]["spec"]
    data = next(v for v in dep["template"]["spec"]["volumes"] if v["name"] == "data")
    assert data == {"name": "data", "persistentVolumeClaim": {"claimName": "rel-driftline-data"}}
    assert dep["strategy"] == {"type": "Recreate"}  # the old pod lets go of the file before the new one opens it
    cfg = yaml.safe_load(kinds["ConfigMap"][0]["data"]["config.yaml"])
    mount = next(m for m in container(kinds)["volumeMounts"] if m["name"] == "data")
    assert cfg["database_url"] == f"sqlite:///{mount['mountPath']}/driftline.sqlite"

    ephemeral = by_kind(render(None, "persistence.enabled=false"))
    assert "PersistentVolumeClaim" not in ephemeral and "strategy" not in ephemeral["Deployment"][0]["spec"]
    assert {"name": "data", "emptyDir": {}} in ephemeral["Deployment"][0]["spec"]["template"]["spec"]["volumes"]
    existing = by_kind(render(None, "persistence.existingClaim=old-data"))
    assert "PersistentVolumeClaim" not in existing
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "old-data"}} in existing["Deployment"][0][
        "spec"]["template"]["spec"]["volumes"]
    classes = {sc: by_kind(render(None, f"persistence.storageClass={sc}"))["PersistentVolumeClaim"][0]["spec"]
               for sc in ("fast", "-")}
    assert classes["fast"]["storageClassName"] == "fast" and classes["-"]["storageClassName"] == ""


def test_full_values_reach_the_pod_spec() -> None:
    kinds = by_kind(render(FULL))
    pod = kinds["Deployment"][0]["spec"]["template"]
    spec, c = pod["spec"], container(kinds)
    assert kinds["Deployment"][0]["spec"]["strategy"]["type"] == "RollingUpdate"
    assert kinds["ServiceAccount"][0]["metadata"]["name"] == spec["serviceAccountName"] == "driftline-sa"
    assert kinds["ServiceAccount"][0]["automountServiceAccountToken"] is False
    assert kinds["ServiceAccount"][0]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:")
    assert pod["metadata"]["annotations"]["example.com/scrape-hint"] == "true"
    assert pod["metadata"]["labels"]["tier"] == "monitoring"
    for doc in (d for docs in kinds.values() for d in docs):
        assert doc["metadata"]["labels"]["team"] == "ml-platform", doc["kind"]  # commonLabels
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"} and spec["tolerations"][0]["key"] == "dedicated"
    assert spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 100
    spread = spec["topologySpreadConstraints"][0]
    assert spread["labelSelector"]["matchLabels"] == kinds["Deployment"][0]["spec"]["selector"]["matchLabels"]
    assert spec["priorityClassName"] == "platform-high" and spec["terminationGracePeriodSeconds"] == 45
    assert {"name": "ca-bundle", "configMap": {"name": "corporate-ca"}} in spec["volumes"]
    assert {"name": "ca-bundle", "mountPath": "/etc/ssl/corporate", "readOnly": True} in c["volumeMounts"]
    assert c["envFrom"] == [{"configMapRef": {"name": "driftline-extra-settings"}}]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert c["startupProbe"] == {"httpGet": {"path": "/healthz", "port": "http"}, "initialDelaySeconds": 0, "periodSeconds": 3,
                                 "timeoutSeconds": 2, "failureThreshold": 40}
    assert c["livenessProbe"]["initialDelaySeconds"] == 5 and c["livenessProbe"]["failureThreshold"] == 4
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["readinessProbe"]["successThreshold"] == 2
    ing = kinds["Ingress"][0]["spec"]
    assert ing["ingressClassName"] == "nginx" and ing["tls"][0]["secretName"] == "driftline-tls"
    backend = ing["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": kinds["Service"][0]["metadata"]["name"], "port": {"name": "http"}}
    assert kinds["Service"][0]["metadata"]["annotations"] == {"service.example/owner": "ml"}
    off = container(by_kind(render(None, "startupProbe.enabled=false", "livenessProbe.enabled=false")))
    assert "startupProbe" not in off and "livenessProbe" not in off and "readinessProbe" in off


def test_service_monitor_options() -> None:
    kinds = by_kind(render(FULL))
    sm = kinds["ServiceMonitor"][0]
    assert sm["metadata"]["namespace"] == "monitoring"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["driftline"]}  # finds the Service from there
    ep = sm["spec"]["endpoints"][0]
    assert (ep["interval"], ep["scrapeTimeout"], ep["honorLabels"]) == ("15s", "5s", True)
    assert ep["relabelings"][0]["targetLabel"] == "node"
    assert ep["metricRelabelings"][0] == {"action": "drop", "sourceLabels": ["__name__"], "regex": "python_gc_.*"}
    default = by_kind(render())["ServiceMonitor"][0]["spec"]
    assert "namespaceSelector" not in default and default["endpoints"][0]["scrapeTimeout"] == "10s"
    assert not {"relabelings", "metricRelabelings", "honorLabels"} & default["endpoints"][0].keys()


def _alerts(rule: dict) -> dict[str, dict]:
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}


def test_alerts_can_be_changed_or_left_out_one_by_one(prometheus_binaries, tmp_path: Path) -> None:
    source = {r["alert"]: r for g in yaml.safe_load((CHART / "files" / "driftline-rules.yml").read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    rule = by_kind(render(FULL))["PrometheusRule"][0]
    alerts = _alerts(rule)
    assert set(alerts) == set(source) - {"DriftlineStaleCohort"} | {"DriftlineFraudDrift"}
    stale = alerts["DriftlineStaleModel"]
    assert (stale["for"], stale["keep_firing_for"]) == ("30m", "5m")
    assert stale["labels"]["severity"] == "critical"  # the override wins over the rule's own
    assert stale["annotations"]["runbook_url"] == "https://wiki.example/driftline-stale"
    assert stale["annotations"]["summary"] == source["DriftlineStaleModel"]["annotations"]["summary"]
    assert stale["expr"] == source["DriftlineStaleModel"]["expr"]
    assert "namespace" not in alerts["DriftlineFraudDrift"]["labels"]  # additionalGroups: rendered as they are
    for name, alert in alerts.items():
        if name in source:
            assert alert["labels"]["namespace"] == "driftline", name  # what the AlertmanagerConfig matches on
            assert alert["labels"]["team"] == "ml-platform", name
            assert alert["annotations"]["dashboard"].startswith("https://grafana.example.com/"), name
            if name != "DriftlineStaleModel":
                assert alert["labels"]["severity"] == source[name]["labels"]["severity"], name
    rules_file = tmp_path / "rendered-rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = subprocess.run([str(prometheus_binaries.promtool), "check", "rules", str(rules_file)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plain = _alerts(by_kind(render(None, "prometheusRule.namespaceLabel=false"))["PrometheusRule"][0])
    assert all("namespace" not in a.get("labels", {}) for a in plain.values())


def test_rules_select_the_scrape_job_the_service_monitor_gives() -> None:
    source = [r["expr"] for g in yaml.safe_load((CHART / "files" / "driftline-rules.yml").read_text())["groups"]
              for r in g["rules"] if "alert" in r]
    for sets, job in ((("fullnameOverride=drift",), "drift"), (("prometheusRule.serviceJob=custom",), "custom")):
        exprs = [a["expr"] for a in _alerts(by_kind(render(None, *sets, release="driftline"))["PrometheusRule"][0]).values()]
        assert not [e for e in exprs if 'job="driftline"' in e], sets
        assert sum(e.count(f'job="{job}"') for e in exprs) == sum(e.count('job="driftline"') for e in source), sets


def test_alertmanager_config_routes_retraining_alerts_to_the_service() -> None:
    kinds = by_kind(render(None, release="driftline"))
    amc = kinds["AlertmanagerConfig"][0]["spec"]
    assert amc["route"]["matchers"] == [{"name": "driftline_action", "value": "retrain", "matchType": "="}]
    assert amc["route"]["receiver"] == amc["receivers"][0]["name"]
    hook = amc["receivers"][0]["webhookConfigs"][0]
    assert hook["url"] == f"{service_url(kinds)}/v1/alertmanager" == "http://driftline.driftline.svc:8000/v1/alertmanager"
    assert hook["sendResolved"] is False
    token = next(e for e in container(kinds)["env"] if e["name"] == "DRIFTLINE_API_TOKEN")["valueFrom"]["secretKeyRef"]
    assert hook["httpConfig"]["authorization"] == {"type": "Bearer", "credentials": token}  # the service's own token
    retrain = [a for a in _alerts(kinds["PrometheusRule"][0]).values()
               if a.get("labels", {}).get("driftline_action") == "retrain"]
    assert retrain and all(a["labels"]["namespace"] == kinds["AlertmanagerConfig"][0]["metadata"]["namespace"]
                           for a in retrain)  # the operator's namespace matcher lets them through
    full = by_kind(render(FULL))["AlertmanagerConfig"][0]
    assert full["metadata"]["labels"]["alertmanagerConfig"] == "driftline"
    assert (full["spec"]["route"]["groupBy"], full["spec"]["route"]["repeatInterval"]) == (["alertname", "model"], "12h")
    assert full["spec"]["receivers"][0]["webhookConfigs"][0]["httpConfig"]["authorization"]["credentials"] == {
        "name": "driftline-auth", "key": "token"}


class _SecretsOnlyAPI(ThreadingHTTPServer):
    """What `lookup` asks the Kubernetes API for, and nothing else: the v1 resource list and GETs of
    Secrets (no API server can run here; helm's own client code makes the requests)."""

    def __init__(self, secrets: dict[tuple[str, str], dict]) -> None:
        self.secrets, self.requests = secrets, []
        super().__init__(("127.0.0.1", 0), _SecretsOnlyHandler)


class _SecretsOnlyHandler(BaseHTTPRequestHandler):
    server: _SecretsOnlyAPI

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?")[0]
        self.server.requests.append(path)
        body: dict
        if path == "/api/v1":
            code, body = 200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret",
                 "verbs": ["get", "list"]}]}
        elif (m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/secrets/([^/]+)", path)) and (
                m[1], m[2]) in self.server.secrets:
            code, body = 200, self.server.secrets[(m[1], m[2])]
        else:
            code, body = 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                               "code": 404, "message": f"{path} not found"}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_generated_secrets_are_kept_across_upgrades(tmp_path: Path) -> None:
    """An upgrade (`lookup` sees the release's Secret) keeps the generated token and HMAC key; a value
    given in values still wins; a fresh namespace gets new ones."""
    b64 = lambda v: base64.b64encode(v.encode()).decode()  # noqa: E731
    installed = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                 "metadata": {"name": "driftline", "namespace": "driftline"},
                 "data": {"write-token": b64("kept-token"), "retrain-secret": b64("kept-hmac")}}
    api = _SecretsOnlyAPI({("driftline", "driftline"): installed})
    thread = threading.Thread(target=api.serve_forever, daemon=True)
    thread.start()
    try:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": f"http://127.0.0.1:{api.server_address[1]}"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            "users": [{"name": "test", "user": {"token": "unused"}}]}))

        def upgrade(*sets: str, namespace: str = "driftline") -> dict[str, str]:
            args = ["template", "driftline", str(CHART), "-n", namespace, "--dry-run=server",
                    "--kubeconfig", str(kubeconfig)]
            for s in sets:
                args += ["--set", s]
            docs = [d for d in yaml.safe_load_all(run(*args).stdout) if d]
            return secret_data(by_kind(docs))

        assert upgrade() == {"write-token": "kept-token", "retrain-secret": "kept-hmac"}
        assert upgrade("auth.writeToken=rotated") == {"write-token": "rotated", "retrain-secret": "kept-hmac"}
        fresh = upgrade(namespace="other")
        assert fresh["write-token"] != "kept-token" and re.fullmatch(r"[A-Za-z0-9]{32}", fresh["write-token"])
        assert "/api/v1/namespaces/driftline/secrets/driftline" in api.requests
    finally:
        api.shutdown()
        api.server_close()
        thread.join(10)


# --- strict validation against the API types ------------------------------------------------------

@pytest.fixture(scope="session")
def k8s_validate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/k8s-validate built with the Go toolchain (modules from the Go proxy; Go's build cache
    is reused between runs, so a rebuild only links)."""
    wait_for_go_builds()
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None)
    if go is None:
        pytest.fail("go is not installed: it builds helm and tests/k8s-validate (scripts/test.sh)", pytrace=False)
    binary = tmp_path_factory.mktemp("k8s-validate") / "k8s-validate"
    proc = subprocess.run([go, "build", "-mod=readonly", "-o", str(binary), "."], cwd=VALIDATOR,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return binary


def validate(binary: Path, manifests: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary)], input=manifests, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("values", [None, FULL], ids=["default", "full"])
def test_every_manifest_decodes_strictly_into_the_api_types(k8s_validate: Path, values: Path | None) -> None:
    manifests = template(values)
    proc = validate(k8s_validate, manifests)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(manifests) if d}
    ok = {line.split()[3].split("/")[0] for line in proc.stdout.splitlines() if line.startswith("ok ")}
    assert ok == kinds, proc.stdout  # every kind was checked, the operator's included
    assert {"ServiceMonitor", "PrometheusRule", "AlertmanagerConfig"} <= ok


def test_more_value_combinations_decode_strictly(k8s_validate: Path) -> None:
    combos = [("persistence.enabled=false",), ("persistence.existingClaim=x", "persistence.storageClass=-"),
              ("auth.enabled=false", "insecure=true", "serviceAccount.create=false"), ("fullnameOverride=drift", "ingress.enabled=true"),
              ("postgresql.enabled=true", "postgresql.url=postgresql://u:p@db/d", "replicaCount=3")]
    for sets in combos:
        proc = validate(k8s_validate, template(None, *sets, release="driftline"))
        assert proc.returncode == 0, (sets, proc.stdout + proc.stderr)


def _mutated(values: Path | None, change) -> str:
    docs = [d for d in yaml.safe_load_all(template(values)) if d]
    for d in docs:
        change(d)
    return yaml.safe_dump_all(docs)


@pytest.mark.parametrize(("kind", "change", "message"), [
    ("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__(
        "livenessProbes", {"httpGet": {"path": "/healthz", "port": "http"}}), 'unknown field "spec.template.spec.containers[0].livenessProbes"'),
    ("Deployment", lambda d: d["spec"].__setitem__("replicas", "two"), "replicas"),
    ("Service", lambda d: d["spec"]["ports"][0].__setitem__("targetPorts", "http"), 'unknown field "spec.ports[0].targetPorts"'),
    ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].__setitem__("scrapeTimout", "5s"),
     'unknown field "spec.endpoints[0].scrapeTimout"'),
    ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].__setitem__("keepFiringFor", "5m"),
     'unknown field "spec.groups[0].rules[0].keepFiringFor"'),
    ("AlertmanagerConfig", lambda d: d["spec"]["receivers"][0]["webhookConfigs"][0].__setitem__("send_resolved", True),
     'unknown field "spec.receivers[0].webhookConfigs[0].send_resolved"'),
    ("PersistentVolumeClaim", lambda d: d["spec"]["resources"]["requests"].__setitem__("storage", "lots"), "quantities"),
    ("ConfigMap", lambda d: d["metadata"].__setitem__("name", "Not_A_Name"), "metadata.name"),
    ("Deployment", lambda d: d["spec"]["selector"]["matchLabels"].__setitem__("extra", "x"), "does not select"),
], ids=["container-field", "replicas-type", "service-port-field", "servicemonitor-field", "rule-field",
        "alertmanagerconfig-field", "quantity", "name", "selector"])
def test_a_wrong_field_fails_validation(k8s_validate: Path, kind: str, change, message: str) -> None:
    """Controls: the validator refuses what the API server would, in Kubernetes' and the operator's types."""
    def apply(doc: dict) -> None:
        if doc["kind"] == kind:
            change(doc)
    proc = validate(k8s_validate, _mutated(None, apply))
    assert proc.returncode == 1, proc.stdout
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert failed and all(f" {kind}" in line for line in failed), proc.stdout
    assert message in proc.stdout, proc.stdout


def test_an_unknown_kind_fails_validation(k8s_validate: Path) -> None:
    proc = validate(k8s_validate, "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitr\nmetadata: {name: x}\n")
    assert proc.returncode == 1 and "no kind" in proc.stdout, proc.stdout


# --- values README and schema ----------------------------------------------------------------------

def _readme_module():
    spec = importlib.util.spec_from_file_location("helm_values_readme", ROOT / "scripts" / "helm-values-readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_values_readme_is_the_generated_one() -> None:
    proc = subprocess.run(["python3", str(ROOT / "scripts" / "helm-values-readme.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    readme = (CHART / "README.md").read_text()
    for key in ("nameOverride", "persistence.enabled", "prometheusRule.alerts", "serviceMonitor.relabelings",
                "topologySpreadConstraints", "auth.writeToken"):
        assert f"| `{key}` |" in readme, key


def test_values_readme_refuses_an_undocumented_value(tmp_path: Path) -> None:
    module = _readme_module()
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    values = chart / "values.yaml"
    values.write_text(values.read_text().replace("persistence:\n", "persistence:\n  undocumented: 1\n", 1))
    with pytest.raises(module.ValuesDocError, match=r"persistence\.undocumented"):
        module.render(chart)
    values.write_text((CHART / "values.yaml").read_text() + "# -- documents nothing\n")
    with pytest.raises(module.ValuesDocError, match="documents no key"):
        module.render(chart)


def _schema_mismatches(values: Any, schema: dict, path: str = "") -> list[str]:
    out = []
    if isinstance(values, dict) and "properties" in schema:
        props = schema["properties"]
        out += [f"{path}{k}: in values.yaml, not in the schema" for k in values if k not in props]
        if schema.get("additionalProperties") is False:  # a closed object: values.yaml shows every key
            out += [f"{path}{k}: in the schema, not in values.yaml" for k in props if k not in values and k != "global"]
        for k, v in values.items():
            if k in props:
                out += _schema_mismatches(v, props[k], f"{path}{k}.")
    return out


def test_schema_is_in_step_with_values() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert _schema_mismatches(values, schema) == []
    assert _schema_mismatches({**values, "extra": 1}, schema) == ["extra: in values.yaml, not in the schema"]
    assert _schema_mismatches({**values, "auth": {}}, schema)[0] == "auth.enabled: in the schema, not in values.yaml"


# --- examples name the Service the chart creates ---------------------------------------------------

EXAMPLES = sorted([*(ROOT / "helm" / "examples").rglob("*.yaml"), ROOT / "alerts" / "alertmanager.example.yml"])
DOCS = sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md", ROOT / "alerts" / "README.md",
               CHART / "README.md", *EXAMPLES])
SVC_URL = re.compile(r"https?://([a-z0-9.-]*driftline[a-z0-9.-]*\.svc(?:\.cluster\.local)?)(:\d+)?")


def service_url(kinds: dict[str, list[dict]]) -> str:
    svc = kinds["Service"][0]
    return f"http://{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc:{svc['spec']['ports'][0]['port']}"


def test_examples_call_the_service_the_chart_creates() -> None:
    """Release `driftline` in namespace `driftline`, as the examples assume: every in-cluster URL of
    Driftline in an example or a doc must be that Service's, and each example must hold one."""
    kinds = by_kind(render(None, release="driftline", namespace="driftline"))
    url = service_url(kinds)
    assert url == "http://driftline.driftline.svc:8000"
    for path in DOCS:
        for m in SVC_URL.finditer(path.read_text()):
            assert m[0] == url, f"{path.relative_to(ROOT)} calls {m[0]}, the chart creates {url}"
    for path in EXAMPLES:  # each example calls the service, in its YAML fields (not only in comments)
        found = [u for doc in yaml.safe_load_all(path.read_text()) for u in _urls(doc)]
        mine = [u for u in found if SVC_URL.match(u)]
        assert mine, f"{path.relative_to(ROOT)} has no URL of the Driftline service"
        for u in mine:
            assert u == url or u.startswith(url + "/"), f"{path.relative_to(ROOT)}: {u} is not under {url}"
    am = yaml.safe_load((ROOT / "alerts/alertmanager.example.yml").read_text())
    hooks = [w["url"] for r in am["receivers"] if r["name"] == "driftline-retrain" for w in r["webhook_configs"]]
    amc = kinds["AlertmanagerConfig"][0]["spec"]["receivers"][0]["webhookConfigs"][0]["url"]
    assert hooks == [amc]  # the plain Alertmanager example and the chart's route agree


def _urls(node: Any) -> list[str]:
    """Every string in a YAML document that is a URL, including those inside embedded YAML files
    (the sidecar's settings in a ConfigMap)."""
    if isinstance(node, dict):
        return [u for v in node.values() for u in _urls(v)]
    if isinstance(node, list):
        return [u for v in node for u in _urls(v)]
    if isinstance(node, str):
        if re.fullmatch(r"https?://\S+", node):
            return [node]
        if "\n" in node:
            try:
                return [u for doc in yaml.safe_load_all(node) for u in _urls(doc)]
            except yaml.YAMLError:
                return []
    return []


def test_kserve_example_takes_the_token_from_the_charts_secret() -> None:
    kinds = by_kind(render(None, release="driftline"))
    ref = next(e for e in container(kinds)["env"] if e["name"] == "DRIFTLINE_API_TOKEN")["valueFrom"]["secretKeyRef"]
    text = (ROOT / "helm/examples/kserve-sidecar.yaml").read_text()
    assert f"-n driftline get secret {ref['name']} -o jsonpath='{{.data.{ref['key']}}}'" in text
