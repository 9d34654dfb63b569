"""Dashboards as code: the checked-in JSON is what the code makes, every query names only catalogued
service metrics, every panel has a unit and a description, links lead to the model detail dashboard,
the report and the status page, and every threshold equals the alert rule it stands for."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm

from driftline.apps.cli.main import main
from driftline.dashboards import DASHBOARDS, checked_in
from driftline.dashboards.generate import OUT_DIR, rendered
from driftline.dashboards.promql import expand, label_values_selector, metric_names, queries
from driftline.dashboards.thresholds import (
    ALERTS,
    DEVICE_HEALTH_ALERTS,
    SERVICE_ALERTS,
    SIDECAR_ONLY_ALERTS,
)

ROOT = Path(__file__).resolve().parent.parent


def boards() -> dict[str, dict]:
    return {name: json.loads(text) for name, text in checked_in().items()}


def panels(d: dict) -> list[dict]:
    return [p for p in d["panels"] if p["type"] != "row"]


SERVICE_SECTIONS = ("Cloud service", "Multivariate drift (service)", "Golden-set conformance")


def service_catalogue() -> set[str]:
    """Metric names in the cloud service's tables of docs/metrics.md (the only ones a dashboard may use;
    the sidecar's own section is left out: no cloud dashboard scrapes a device)."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    names: set[str] = set()
    for heading in SERVICE_SECTIONS:
        section = text.split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]
        names |= set(re.findall(r"^\| `(driftline_[a-z0-9_]+)` \|", section, flags=re.M))
    return names


def uncatalogued(expr: str, catalogue: set[str]) -> set[str]:
    selector = label_values_selector(expr)
    return metric_names(selector if selector is not None else expr) - catalogue


def test_checked_in_json_is_what_the_code_generates(tmp_path: Path) -> None:
    for fname, text in rendered().items():
        assert (OUT_DIR / fname).read_text() == text, f"{fname} is stale: python -m driftline.dashboards.generate"
    proc = subprocess.run([sys.executable, "-m", "driftline.dashboards.generate", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in DASHBOARDS:
        assert (tmp_path / f"{name}.json").read_bytes() == (OUT_DIR / f"{name}.json").read_bytes()
    assert main(["dashboards", "generate", "--check"]) == 0
    (tmp_path / "edge.json").write_text("{}\n")  # the check can fail
    assert main(["dashboards", "generate", "--check", "--out", str(tmp_path)]) == 1


def test_json_round_trips_through_the_sdk_schema() -> None:
    for name, d in boards().items():
        again = json.loads(json.dumps(dm.Dashboard.from_json(d), cls=JSONEncoder))
        assert again == d, name
        assert d["uid"] == f"driftline-{name}" and d["title"].startswith("Driftline / ")


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (model) (rate(a_total{x="y",z=~"b|c"}[5m])) / on (model) group_left (v) b > bool 0.5', {"a_total", "b"}),
    ("time() - max by (model) (c_seconds) > 900", {"c_seconds"}),
    ('topk(10, max by (m, f) (d{method="ks"})) or vector(0)', {"d"}),
    ('e{m="$model"} offset 5m unless on (m) f[$__rate_interval:1m]', {"e", "f"}),
    ('{__name__="g", job="x"} * 1e6 + histogram_quantile(0.9, h_bucket)', {"g", "h_bucket"}),
    ('label_values(i{model="$model"}, version)', {"i"}),
])
def test_metric_names_are_parsed_from_promql(expr: str, names: set[str]) -> None:
    selector = label_values_selector(expr)
    assert metric_names(selector if selector is not None else expr) == names


def test_every_query_uses_only_catalogued_service_metrics() -> None:
    catalogue = service_catalogue()
    assert "driftline_observations_total" in catalogue and "driftline_sidecar_spool_bytes" not in catalogue
    found = [q for name, d in boards().items() for q in queries(name, d)]
    assert len(found) > 50
    bad = {(q.dashboard, q.where): uncatalogued(q.expr, catalogue) for q in found if uncatalogued(q.expr, catalogue)}
    assert not bad, f"queries use metrics missing from docs/metrics.md (cloud service): {bad}"
    assert uncatalogued("rate(driftline_not_a_metric_total[5m]) + up", catalogue) == {
        "driftline_not_a_metric_total", "up"}  # the check can fail


def test_variables_expand_the_way_grafana_does() -> None:
    q = 'rate(x{model="$model",v="${version}",w=~"${model:regex}"}[$__rate_interval]) + y[$__range] + [[model]]'
    out = expand(q, {"model": "cam", "version": "v1"}, step_seconds=2, scrape_seconds=1, range_seconds=60)
    assert out == 'rate(x{model="cam",v="v1",w=~"cam"}[4s]) + y[60s] + cam'
    assert "$other" in expand("z{a=\"$other\"}", {}, step_seconds=1, scrape_seconds=1, range_seconds=1)


def test_panels_have_units_descriptions_ids_and_links() -> None:
    for name, d in boards().items():
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), name
        for p in panels(d):
            assert p["fieldConfig"]["defaults"].get("unit"), (name, p["title"])
            assert len(p.get("description", "")) > 20, (name, p["title"])
            assert p["datasource"]["uid"] == "${datasource}", (name, p["title"])
            refs = [t["refId"] for t in p["targets"]]
            assert refs and len(refs) == len(set(refs)), (name, p["title"])
    b = boards()
    variables = {v["name"]: v for v in b["model"]["templating"]["list"]}
    assert variables["model"]["query"] == "label_values(driftline_observations_total, model)"
    assert variables["version"]["query"] == 'label_values(driftline_observations_total{model="$model"}, version)'
    data_links = [lk["url"] for p in panels(b["fleet"]) for lk in p["fieldConfig"]["defaults"].get("links", [])]
    assert any(u.startswith("/d/driftline-model/") and "var-model=${__field.labels.model}" in u for u in data_links)
    assert any(u.startswith("/d/driftline-model/") and "var-model=${__data.fields.model}" in u for u in data_links)
    assert any(u == "${service_url}/v1/models/${__field.labels.model}/report.html?version=${__field.labels.version}"
               for u in data_links)
    assert any(u.startswith("${service_url}/models/") for u in data_links)
    model_links = [lk["url"] for lk in b["model"]["links"]]
    assert "${service_url}/v1/models/${model}/report.html?version=${version}" in model_links
    for name in DASHBOARDS:
        top = [lk["url"] for lk in b[name]["links"]]
        assert any(u.startswith("${service_url}/") for u in top), name  # status page or report from every board


def rules() -> dict[str, dict]:
    doc = yaml.safe_load((ROOT / "alerts" / "driftline-rules.yml").read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"]}


def test_alert_thresholds_are_the_rules_thresholds() -> None:
    rs = rules()
    assert set(ALERTS) | SIDECAR_ONLY_ALERTS | SERVICE_ALERTS | DEVICE_HEALTH_ALERTS == set(rs), \
        "thresholds.py and alerts/ name different alerts"
    for name, t in ALERTS.items():
        m = re.search(r"(==|!=|>=|<=|>|<)\s*(?:bool\s+)?(-?[0-9.e+]+)[\s)]*$", rs[name]["expr"].strip())
        assert m, (name, rs[name]["expr"])
        assert (m.group(1), float(m.group(2))) == (t.op, t.value), f"{name}: rule says {m.group(0)}, dashboards {t}"


def _steps(p: dict) -> list[float]:
    th = p["fieldConfig"]["defaults"].get("thresholds") or {}
    return [s["value"] for s in th.get("steps", []) if s.get("value") is not None]


def test_panels_naming_an_alert_turn_red_where_it_fires() -> None:
    named: set[str] = set()
    for name, d in boards().items():
        for p in panels(d):
            for alert in re.findall(r"\bDriftline[A-Z][A-Za-z]+\b", p["description"]):
                assert alert in ALERTS, (name, p["title"], alert)
                named.add(alert)
                t = ALERTS[alert]
                exprs = " ".join(x["expr"] for x in p["targets"])
                literal = re.search(rf"{re.escape(t.op)}\s*(?:bool\s+)?{t.value:g}\b", exprs)
                red_flag = any(o.get(f"{t.step:g}", {}).get("color") == "red"
                               for m in p["fieldConfig"]["defaults"].get("mappings", []) for o in [m["options"]])
                ok = {t.step, *t.equivalent} & set(_steps(p))
                assert ok or literal or red_flag, (name, p["title"], alert, _steps(p))
    assert named == set(ALERTS), f"alerts no panel shows: {set(ALERTS) - named}"
    edge = boards()["edge"]
    oldest = next(p for p in panels(edge) if p["title"] == "Oldest pending window on any device")
    assert _steps(oldest) == [1800] and "> 1800" in rules()["DriftlineEdgeSpoolBacklog"]["expr"]


def test_panels_fit_the_grid_without_overlapping() -> None:
    for name, d in boards().items():
        cells: dict[tuple[int, int], str] = {}
        for p in d["panels"]:
            g = p["gridPos"]
            assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, (name, p["title"], g)
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{name}: {p['title']!r} overlaps {cells[(x, y)]!r}"
                    cells[(x, y)] = p["title"]
