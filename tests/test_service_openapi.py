"""The OpenAPI document as a client generator reads it: a bearer scheme, typed answers, every 4xx
documented, and real answers conforming (schemathesis); Swagger UI from the package; JSON logs."""

from __future__ import annotations

import io
import json
import logging
import re
import tempfile
import time

import httpx
import numpy as np
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from driftline.service.app import create_app, open_parts
from driftline.service.settings import EvaluationSettings, ServiceSettings
from driftline.wire import decode_envelope
from tests.service_support import envelope, reference_bytes, running_service, window


def _app() -> object:
    tmp = tempfile.mkdtemp(prefix="driftline-oa-")
    s = ServiceSettings(database_url=f"sqlite:///{tmp}/oa.sqlite", evaluation=EvaluationSettings(interval_seconds=3600))
    app = create_app(s, background=False)
    parts = open_parts(s)
    rng = np.random.default_rng(0)
    parts.store.put_reference("m", "v1", decode_envelope(reference_bytes(rng, "m", "v1", 1000)).profiles[0], "uploaded")
    for _ in range(3):
        parts.store.ingest(decode_envelope(envelope(window(rng, "m", "v1", start=time.time() - 60))), "http")
    parts.store.put_canary("m", {"baseline_version": "v1", "canary_version": "v2", "min_rows": 10,
                                 "min_duration_seconds": 1})
    app.state.parts = parts
    return app


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_answers_conform_to_the_documented_statuses_and_schemas(case) -> None:
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance, response_schema_conformance,
                                   content_type_conformance])


def test_security_scheme_typed_answers_and_4xx_are_documented(tmp_path) -> None:
    s = ServiceSettings(database_url=f"sqlite:///{tmp_path / 's.sqlite'}", port=0, api_token="s3cret")
    with running_service(s) as url, httpx.Client(base_url=url, timeout=30) as c:
        doc = c.get("/openapi.json").json()
        assert doc["components"]["securitySchemes"]["bearerAuth"] == {
            "type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearerAuth"]
            ["description"]}
        ingest = doc["paths"]["/v1/ingest"]["post"]
        assert ingest["security"] == [{"bearerAuth": []}]
        assert {"200", "400", "401", "413", "422"} <= set(ingest["responses"])
        assert ingest["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/IngestResponse")
        assert ingest["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
        drift = doc["paths"]["/v1/models/{model}/drift"]["get"]
        assert "security" not in drift and {"200", "404", "400", "422"} <= set(drift["responses"])
        assert "HTTPValidationError" not in doc["components"]["schemas"]
        # what the document says is what the service does
        r = c.post("/v1/ingest", content=b"x")
        assert r.status_code == 401 and set(r.json()) == {"error", "detail"}
        r = c.get("/v1/models/m/drift", params={"since": "yesterday"})
        assert r.status_code == 422 and set(r.json()) == {"error", "detail"}


def test_swagger_ui_is_served_from_the_package_without_a_cdn(tmp_path) -> None:
    s = ServiceSettings(database_url=f"sqlite:///{tmp_path / 's.sqlite'}", port=0)
    with running_service(s) as url, httpx.Client(base_url=url, timeout=30) as c:
        page = c.get("/docs")
        assert page.status_code == 200 and "SwaggerUIBundle" in page.text
        links = re.findall(r'(?:src|href|url)\s*[:=]\s*["\']([^"\']+)["\']', page.text)
        assert links and all(link.startswith("/") for link in links), links
        for link in links:
            r = c.get(link)
            assert r.status_code == 200, link
        js = c.get("/docs/assets/swagger-ui-bundle.js")
        assert js.headers["content-type"].startswith("text/javascript") and len(js.content) > 100_000
        assert c.get("/docs/assets/..%2Fsettings.py").status_code == 404
        assert c.get("/redoc").status_code == 404  # ReDoc would load from a CDN: not served


def test_json_logs_one_line_per_event_with_request_and_model_ids(tmp_path) -> None:
    from driftline.service.observability import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        s = ServiceSettings(database_url=f"sqlite:///{tmp_path / 's.sqlite'}", port=0)
        with running_service(s) as url, httpx.Client(base_url=url, timeout=30) as c:
            rng = np.random.default_rng(4)
            c.put("/v1/models/m/versions/v1/reference", content=reference_bytes(rng, "m", "v1")).raise_for_status()
            r = c.post("/v1/ingest", content=envelope(window(rng, "m", "v1", start=time.time() - 60)),
                       headers={"X-Request-ID": "req-42"})
            assert r.status_code == 200
        logging.getLogger("driftline.test").warning("multi\nline", extra={"model": "m"})
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("driftline.test").exception("failed")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    lines = stream.getvalue().splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "time", "level", "logger", "message"} <= set(e) for e in events)
    ingest = [e for e in events if e.get("request_id") == "req-42"]
    assert ingest and all(e.get("model") == "m" for e in ingest), events
    multi = next(e for e in events if e["message"] == "multi\nline")
    assert multi["model"] == "m" and multi["level"] == "warning"
    failed = next(e for e in events if e["message"] == "failed")
    assert "ValueError: boom" in failed["exception"]
