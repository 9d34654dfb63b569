"""Dashboards: the checked-in JSON is what the code makes, every query uses catalogued metrics and
returns data from a real Prometheus scraping a real service, and pushing reports clear errors."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from driftline.cli.main import main
from driftline.dashboards.generate import OUT_DIR, rendered
from driftline.service.settings import EvaluationSettings, ServiceSettings
from tests.harness.ports import free_port
from tests.harness.prometheus import PrometheusServer
from tests.service_support import envelope, reference_bytes, running_service, window

ROOT = Path(__file__).resolve().parent.parent


def queries() -> list[tuple[str, str, str]]:
    out = []
    for fname in rendered():
        d = json.loads((OUT_DIR / fname).read_text())
        for panel in d["panels"]:
            for t in panel.get("targets", []):
                out.append((fname, panel["title"], t["expr"]))
        for var in d.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                out.append((fname, f"variable {var['name']}", var["query"]))
    return out


def test_checked_in_json_is_what_the_code_generates() -> None:
    for fname, text in rendered().items():
        assert (OUT_DIR / fname).read_text() == text, f"{fname} is stale: python -m driftline.dashboards.generate"
    assert main(["dashboards", "generate", "--check"]) == 0


def test_every_query_uses_catalogued_metrics_and_panels_have_units() -> None:
    catalogue = (ROOT / "docs" / "metrics.md").read_text()
    for fname, title, expr in queries():
        for metric in re.findall(r"\b(driftline_[a-z0-9_]+)", expr):
            assert f"`{metric}`" in catalogue or metric == "driftline_canary_verdict", (fname, title, metric)
    for fname in rendered():
        d = json.loads((OUT_DIR / fname).read_text())
        for p in d["panels"]:
            assert p["fieldConfig"]["defaults"].get("unit"), (fname, p["title"])
    model = json.loads((OUT_DIR / "model.json").read_text())
    assert {v["name"] for v in model["templating"]["list"]} >= {"model", "version"}
    fleet = json.loads((OUT_DIR / "fleet.json").read_text())
    assert any("driftline-model" in link["url"] for p in fleet["panels"] for link in p.get("links", []))
    assert any("report.html" in link["url"] for p in model["panels"] for link in p.get("links", []))


def test_alert_thresholds_match_dashboard_thresholds() -> None:
    rules = {r["alert"]: r for g in yaml.safe_load((ROOT / "alerts" / "driftline-rules.yml").read_text())["groups"]
             for r in g["rules"]}
    edge = json.loads((OUT_DIR / "edge.json").read_text())
    oldest = next(p for p in edge["panels"] if p["title"].startswith("Oldest pending"))
    steps = [s["value"] for s in oldest["fieldConfig"]["defaults"]["thresholds"]["steps"] if s["value"]]
    assert f"> {int(steps[0])}" in rules["DriftlineEdgeSpoolBacklog"]["expr"]


def _feed(url: str) -> None:
    rng = np.random.default_rng(0)
    now = time.time()
    with httpx.Client(base_url=url) as c:
        for version in ("v1", "v2"):
            c.put(f"/v1/models/cam/versions/{version}/reference", content=reference_bytes(rng, "cam", version))
        c.put("/v1/models/cam/canary", json={"baseline_version": "v1", "canary_version": "v2", "min_rows": 100,
                                            "min_duration_seconds": 10})
        c.put("/v1/models/other/versions/v1/reference", content=reference_bytes(rng, "other", "v1"))
        for i in range(6):
            past, future = now - 400 + i * 60, now + i * 60  # drift looks back; the canary counts from its start
            for start in (past, future):
                for dev, shift in (("d1", 0.0), ("d2", 1.5)):
                    site = "oslo" if dev == "d1" else "lima"
                    c.post("/v1/ingest", content=envelope(window(rng, "cam", "v1", device=dev, start=start,
                                                                  shift=shift, site=site), device=dev)).raise_for_status()
            c.post("/v1/ingest", content=envelope(window(rng, "cam", "v2", variant="canary", device="d3",
                                                          start=future))).raise_for_status()
            c.post("/v1/ingest", content=envelope(window(rng, "other", "v1", device="d9", start=past)))
        c.post("/v1/ingest", content=b"junk")


def test_every_panel_query_returns_data_from_a_real_prometheus(tmp_path, prometheus_binaries) -> None:
    port = free_port()
    s = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'd.sqlite'}", port=port,
                        evaluation=EvaluationSettings(current_window_seconds=7200, interval_seconds=0.5,
                                                      drift_share_threshold=0.3))
    (tmp_path / "prom.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "driftline", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]}))
    prom = PrometheusServer(tmp_path / "prom", tmp_path / "prom.yml", binaries=prometheus_binaries)
    with running_service(s) as url:
        _feed(url)
        prom.start()
        try:
            prom.wait_for("driftline_canary_verdict", timeout=60)
            time.sleep(6)  # a few scrapes, so rates have two samples
            failures = []
            for fname, title, expr in queries():
                q = (expr.replace("$__rate_interval", "1m").replace("$model", "cam").replace("$version", "v1"))
                if q.startswith("label_values("):
                    inner = q[len("label_values("):q.rindex(",")]
                    q = inner
                try:
                    result = prom.query(q)
                except Exception as exc:  # a parse error is a failure of the dashboard, report it
                    failures.append((fname, title, q, f"error: {exc}"))
                    continue
                if not result:
                    failures.append((fname, title, q, "no data"))
        finally:
            prom.stop()
    assert not failures, failures


class FakeGrafana:
    """The three Grafana API calls the push uses, recording what it receives."""

    def __init__(self, token: str) -> None:
        self.uploaded: list[dict] = []
        self.folders: list[dict] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def _reply(self, code: int, obj: object) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authed(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {token}":
                    self._reply(401, {"message": "invalid API key"})
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802
                if self._authed():
                    self._reply(200, outer.folders)

            def do_POST(self) -> None:  # noqa: N802
                if not self._authed():
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/api/folders":
                    outer.folders.append({"uid": "f1", "title": body["title"]})
                    self._reply(200, {"uid": "f1", "title": body["title"]})
                else:
                    outer.uploaded.append(body)
                    self._reply(200, {"status": "success", "url": f"/d/{body['dashboard']['uid']}"})

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_push_uploads_into_a_folder_and_reports_errors(monkeypatch, capsys) -> None:
    g = FakeGrafana("tok")
    try:
        monkeypatch.setenv("GRAFANA_TOKEN", "tok")
        assert main(["dashboards", "push", "--grafana-url", g.url, "--folder", "ML"]) == 0
        assert len(g.uploaded) == 4 and all(u["folderUid"] == "f1" and u["overwrite"] for u in g.uploaded)
        assert g.folders == [{"uid": "f1", "title": "ML"}]
        assert "/d/driftline-fleet" in capsys.readouterr().out
        monkeypatch.setenv("GRAFANA_TOKEN", "wrong")
        assert main(["dashboards", "push", "--grafana-url", g.url]) == 2
        assert "API token" in capsys.readouterr().err
    finally:
        g.close()
    assert main(["dashboards", "push", "--grafana-url", f"http://127.0.0.1:{free_port()}"]) == 2
    assert "cannot reach Grafana" in capsys.readouterr().err


@pytest.mark.parametrize("fname", ["fleet.json", "model.json", "canary.json", "edge.json"])
def test_dashboard_uids_are_stable(fname: str) -> None:
    d = json.loads((OUT_DIR / fname).read_text())
    assert d["uid"].startswith("driftline-") and d["title"].startswith("Driftline / ")
