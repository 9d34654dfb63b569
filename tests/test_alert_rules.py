"""Alert rules: promtool checks and unit tests, annotations, runbook anchors, metric names, one policy."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from driftline.service.settings import RetrainSettings

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "driftline-rules.yml"


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_check_and_unit_tests_pass(prometheus_binaries) -> None:
    check = subprocess.run([str(prometheus_binaries.promtool), "check", "rules", str(RULES)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([str(prometheus_binaries.promtool), "test", "rules",
                           str(ROOT / "alerts" / "tests" / "driftline-rules.test.yml")],
                          capture_output=True, text=True, timeout=120)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def test_every_rule_is_unit_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load((ROOT / "alerts" / "tests" / "driftline-rules.test.yml").read_text())["tests"]
    firing, quiet = set(), set()
    for t in tests:
        for case in t["alert_rule_test"]:
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    names = {r["alert"] for r in rules()}
    assert names <= firing and names <= quiet


def test_annotations_runbooks_and_metrics() -> None:
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
               for h in re.findall(r"^## (.+)$", runbooks, flags=re.M)}
    catalogue = (ROOT / "docs" / "metrics.md").read_text()
    for r in rules():
        assert r["labels"]["severity"] in ("info", "warning", "critical"), r["alert"]
        ann = r["annotations"]
        assert ann["summary"] and ann["description"], r["alert"]
        assert "{{" in ann["description"], f"{r['alert']}: the description should carry the numbers"
        anchor = ann["runbook_url"].split("#", 1)[1]
        assert anchor in anchors, f"{r['alert']}: no runbook section #{anchor}"
        for metric in set(re.findall(r"\b(driftline_[a-z0-9_]+)", r["expr"])):
            if metric == "driftline_canary_verdict" or metric.startswith("driftline_canary_verdict"):
                assert "driftline_canary_verdict" in catalogue
                continue
            assert f"`{metric}`" in catalogue, f"{r['alert']} uses {metric}, not in docs/metrics.md"


def test_retraining_rule_and_internal_policy_are_one_policy() -> None:
    by_name = {r["alert"]: r for r in rules()}
    retrain = by_name["DriftlineRetrainModel"]
    assert retrain["labels"]["driftline_action"] == "retrain"
    assert "driftline_dataset_drift" in retrain["expr"] and "== 1" in retrain["expr"]
    minutes = int(retrain["for"].rstrip("m"))
    assert minutes * 60 == RetrainSettings().sustained_seconds
