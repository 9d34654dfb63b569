"""Alert rules: promtool check and unit tests, coverage, annotations, runbook anchors, metric names.

The rules are plain files in ``alerts/``; these tests keep them honest: every rule is unit-tested
firing and not firing, carries severity / summary / description (with numbers) / runbook_url, links
to a section that exists in ``docs/runbooks.md``, and uses only metrics from ``docs/metrics.md``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "alerts"
RULES = ALERTS / "driftline-rules.yml"
UNIT_TESTS = sorted((ALERTS / "tests").glob("*.test.yml"))
METRIC = re.compile(r"\b(driftline_[a-z0-9_]+)\b")


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def catalogue() -> set[str]:
    """Metric names documented in docs/metrics.md (first column of its tables)."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    return set(re.findall(r"^\| `(driftline_[a-z0-9_]+)` \|", text, flags=re.M))


def runbook_anchors() -> set[str]:
    """GitHub-style anchors of the ``##`` sections of docs/runbooks.md."""
    text = (ROOT / "docs" / "runbooks.md").read_text()
    return {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^## (.+)$", text, flags=re.M)}


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_promtool_check_rules_is_clean(prometheus_binaries) -> None:
    out = _run([str(prometheus_binaries.promtool), "check", "rules", str(RULES)], 60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout, out.stdout


def test_promtool_unit_tests_pass(prometheus_binaries) -> None:
    assert UNIT_TESTS, "no promtool unit tests in alerts/tests/"
    out = _run([str(prometheus_binaries.promtool), "test", "rules", *map(str, UNIT_TESTS)], 120)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_promtool_unit_tests_can_fail(prometheus_binaries, tmp_path: Path) -> None:
    """A wrong expected description must fail, so a passing run means the descriptions were compared."""
    doc = yaml.safe_load(UNIT_TESTS[0].read_text())
    case = next(c for t in doc["tests"] for c in t["alert_rule_test"] if c["exp_alerts"])
    case["exp_alerts"][0]["exp_annotations"]["description"] += " (wrong)"
    doc["rule_files"] = [str(RULES)]
    broken = tmp_path / "broken.test.yml"
    broken.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = _run([str(prometheus_binaries.promtool), "test", "rules", str(broken)], 120)
    assert out.returncode != 0 and "(wrong)" in out.stdout + out.stderr, out.stdout + out.stderr


def test_alertmanager_example_is_valid_and_routes_retraining_to_the_service(prometheus_binaries) -> None:
    example = ALERTS / "alertmanager.example.yml"
    if prometheus_binaries.amtool is not None:
        out = _run([str(prometheus_binaries.amtool), "check-config", str(example)], 60)
        assert out.returncode == 0, out.stdout + out.stderr
    cfg = yaml.safe_load(example.read_text())
    route = next(r for r in cfg["route"]["routes"] if 'driftline_action="retrain"' in r.get("matchers", []))
    receiver = next(r for r in cfg["receivers"] if r["name"] == route["receiver"])
    # the Helm chart's Service (tests/test_helm.py checks it against the rendered chart)
    assert [w["url"] for w in receiver["webhook_configs"]] == ["http://driftline.driftline.svc:8000/v1/alertmanager"]


def test_every_rule_is_unit_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in UNIT_TESTS:
        for t in yaml.safe_load(path.read_text())["tests"]:
            for case in t.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {r["alert"] for r in rules()}
    assert not names - firing, f"never tested firing: {sorted(names - firing)}"
    assert not names - quiet, f"never tested not firing: {sorted(names - quiet)}"
    assert not (firing | quiet) - names, f"tests name unknown alerts: {sorted((firing | quiet) - names)}"


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_rule_labels_annotations_and_runbook(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"Driftline[A-Z][A-Za-z]+", rule["alert"])
    assert rule["labels"]["severity"] in ("info", "warning", "critical")
    ann = rule["annotations"]
    assert set(ann) >= {"summary", "description", "runbook_url"}
    assert ann["summary"].strip() and ann["description"].strip()
    # the numbers: the alert's value, or a query for the scores / counts behind it
    assert "$value" in ann["description"] or "query" in ann["description"], "description carries no numbers"
    url, _, anchor = ann["runbook_url"].partition("#")
    assert url.endswith("docs/runbooks.md") and anchor in runbook_anchors(), f"no runbook section #{anchor}"
    assert "for" in rule, "every rule says how long its condition must hold (for: 0m at least)"


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_rule_uses_only_catalogued_metrics(rule: dict[str, Any]) -> None:
    known = catalogue()
    assert "driftline_retrain_requests_total" in known  # the parser reads the catalogue
    # label names that look like metrics (the canary state set names its label after the metric)
    label_names = set(re.findall(r"\b(driftline_[a-z0-9_]+)\s*=", rule["expr"] + rule["annotations"]["description"]))
    used = set(METRIC.findall(rule["expr"])) | set(METRIC.findall(rule["annotations"]["description"]))
    for name in sorted(used):
        if name in label_names and name in known:
            continue
        assert name in known, f"{rule['alert']} uses {name}, which docs/metrics.md does not list"


def test_retraining_alerts_are_the_only_routed_ones() -> None:
    routed = [r["alert"] for r in rules() if r["labels"].get("driftline_action") == "retrain"]
    assert routed == ["DriftlineRetrainModel"]
    assert all(set(r["labels"]) <= {"severity", "driftline_action"} for r in rules())


def test_retraining_rule_is_the_service_policy() -> None:
    """One policy: the rule's expression and for: are what RetrainPolicy renders from the settings."""
    from driftline.service.retrain import RetrainPolicy
    from driftline.service.retrain.policy import ACTION_LABEL, ACTION_VALUE, RULE_NAME
    from driftline.service.settings import RetrainSettings

    policy = RetrainPolicy.from_settings(RetrainSettings())
    rule = next(r for r in rules() if r["alert"] == RULE_NAME)
    assert rule["labels"][ACTION_LABEL] == ACTION_VALUE
    assert rule["expr"] == policy.promql()
    assert rule["for"] == policy.rule_for(), (
        f"{RULE_NAME} for: {rule['for']} but retrain.sustained_seconds = {policy.sustained_seconds:g}s; change both")
    assert policy.sustained_seconds == RetrainPolicy().sustained_seconds  # settings default = policy default
    assert policy.cooldown_seconds == RetrainPolicy().cooldown_seconds
