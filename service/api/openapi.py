"""The OpenAPI document and its Swagger UI, served from the package (no CDN: air-gapped clusters work).

The routes stay plain; this module adds what a client generator and a security review need:

* a ``bearerAuth`` security scheme, required on every operation whose dependencies check a token
  (a dependency named ``require_*`` or ``ingest_identity``), with 401 documented there;
* typed 200 responses (:data:`RESPONSES`, pydantic models below; the schemathesis test checks that
  real responses conform) and the error body every 4xx carries (:class:`ErrorBody`);
* the 4xx each operation can answer: 400 (a malformed body or range), 401, 404 (unknown model),
  412 (a canary gate that says no), 413 (body over ``max_body_bytes``), 422 (a parameter or body
  that does not validate), 503 (the store is unavailable).

Swagger UI's files come from the ``swagger-ui-bundle`` package (Apache-2.0, a dependency of the
``service`` extra); ``/docs`` answers 404 with a one-line reason when it is not installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ErrorBody", "install_docs", "install_openapi", "swagger_ui_dir"]


class ErrorBody(BaseModel):
    """Every error the API answers: a one-line ``error`` and an optional ``detail``."""

    error: str
    detail: Any = None


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class IngestResponse(BaseModel):
    """What happened to one envelope; ``duplicate`` means its id was merged before (a no-op)."""

    envelope_id: str
    result: Literal["accepted", "duplicate"]
    windows: int = Field(ge=0)


class Stream(_Open):
    version: str
    variant: str
    rows: int
    windows: int
    first_window_start: float
    last_window_end: float


class ModelSummary(_Open):
    name: str
    versions: list[str]
    variants: list[str]
    rows: int
    windows: int
    first_window_start: float
    last_window_end: float
    streams: list[Stream]
    references: dict[str, str] = {}


class ModelList(BaseModel):
    models: list[ModelSummary]


class ReferenceStored(_Open):
    model: str
    version: str
    rows: int
    features: list[str]
    outputs: list[str]
    source: str


class ColumnDrift(_Open):
    name: str
    drift_detected: bool
    scores: dict[str, float | None]


class DriftReport(_Open):
    """The shape of ``driftline drift --json`` plus the range and reference used."""

    model: str
    version: str
    since: float
    until: float
    drift_share: float
    dataset_drift: bool
    features: list[ColumnDrift]
    outputs: list[ColumnDrift]
    reference_source: str
    windows: int


class HistoryBucket(_Open):
    start: float
    end: float
    rows: int
    drift_share: float
    dataset_drift: bool


class DriftHistory(BaseModel):
    model: str
    history: list[HistoryBucket]


class DeviceDrift(_Open):
    device: str
    rows: int
    drift_share: float
    dataset_drift: bool
    max_ks: float
    drifted_features: list[str]
    last_window_end: float


class DeviceRanking(BaseModel):
    model: str
    devices: list[DeviceDrift]


class CanaryResult(_Open):
    model: str
    verdict: Literal["continue", "promote", "rollback"]
    baseline_version: str
    canary_version: str
    rows: dict[str, int]
    reasons: list[str]


class CanaryDeleted(BaseModel):
    model: str
    deleted: bool


class GateAnswer(_Open):
    verdict: Literal["continue", "promote", "rollback"]
    reasons: list[str]
    rows: dict[str, int]


class ArgoMetric(_Open):
    verdict: Literal["continue", "promote", "rollback"]
    promote: bool
    rollback: bool
    baseline_rows: int
    canary_rows: int
    reasons: list[str]


class Health(_Open):
    status: str


# (method, path) -> the model of the 200 answer
RESPONSES: dict[tuple[str, str], type[BaseModel]] = {
    ("post", "/v1/ingest"): IngestResponse,
    ("get", "/v1/models"): ModelList,
    ("put", "/v1/models/{model}/versions/{version}/reference"): ReferenceStored,
    ("get", "/v1/models/{model}/drift"): DriftReport,
    ("get", "/v1/models/{model}/drift/history"): DriftHistory,
    ("get", "/v1/models/{model}/devices"): DeviceRanking,
    ("put", "/v1/models/{model}/canary"): CanaryResult,
    ("get", "/v1/models/{model}/canary"): CanaryResult,
    ("delete", "/v1/models/{model}/canary"): CanaryDeleted,
    ("post", "/v1/models/{model}/canary/gate/check"): GateAnswer,
    ("post", "/v1/models/{model}/canary/gate/promote"): GateAnswer,
    ("post", "/v1/models/{model}/canary/gate/rollback"): GateAnswer,
    ("get", "/v1/models/{model}/canary/argo"): ArgoMetric,
    ("get", "/healthz"): Health,
    ("get", "/readyz"): Health,
}
GATES = {p for m, p in RESPONSES if "/gate/" in p}

_ERRORS = {400: "malformed request (body, profile file or time range)", 401: "missing or wrong bearer token",
           404: "unknown model, version or experiment", 412: "the gate says no (body: the verdict and reasons)",
           403: "a valid token that may not do this (no token configured for the report; a device writing as another)",
           413: "request body over the size limit", 422: "a parameter or body field does not validate",
           429: "over the rate limit (see Retry-After)",
           503: "the store is unavailable"}


def _secured(route: Any, reads: bool) -> bool:
    """Whether the route's dependency tree checks a bearer token (reads only when a read token is set)."""
    stack = list(getattr(getattr(route, "dependant", None), "dependencies", []))
    while stack:
        dep = stack.pop()
        name = getattr(dep.call, "__name__", "")
        if name == "require_read" and not reads:
            continue
        if name.startswith("require_") or name == "ingest_identity":
            return True
        stack.extend(dep.dependencies)
    return False


def _walk(routes: Any, prefix: str = "") -> Any:
    """(full path, route) of every route, through included routers (FastAPI may keep them nested)."""
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            ctx = getattr(r, "include_context", None)
            yield from _walk(inner.routes, prefix + str(getattr(ctx, "prefix", "") or ""))
        elif hasattr(r, "path"):
            yield prefix + r.path, r


def install_openapi(app: FastAPI, *, reads_secured: bool = False) -> None:
    """Replace ``app.openapi`` with the document described in the module docstring (built once).

    ``reads_secured``: a read token is configured, so read endpoints require the bearer scheme too.
    """

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        comps = doc.setdefault("components", {})
        schemas = comps.setdefault("schemas", {})
        comps["securitySchemes"] = {"bearerAuth": {
            "type": "http", "scheme": "bearer",
            "description": "`api_token` (writes; reads too when `read_token` is set); see docs/operations.md"}}
        for model in {ErrorBody, *RESPONSES.values()}:
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(js.pop("$defs", {}))
            schemas[model.__name__] = js
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        err = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        secured = {(m.lower(), path) for path, r in _walk(app.routes) if _secured(r, reads_secured) for m in getattr(r, "methods", ())}
        for path, ops in doc.get("paths", {}).items():
            for method, op in ops.items():
                responses = op.setdefault("responses", {})
                model = RESPONSES.get((method, path))
                if model is not None:
                    responses["200"] = {"description": responses.get("200", {}).get("description", "OK"),
                                        "content": {"application/json": {"schema": {
                                            "$ref": f"#/components/schemas/{model.__name__}"}}}}
                codes: set[int] = {503} if path.startswith("/v1/") or path == "/readyz" else set()
                if (method, path) in secured:
                    op["security"] = [{"bearerAuth": []}]
                    codes.add(401)
                if "{model}" in path:
                    codes.add(404)
                if path.endswith(("/report.html", "/domain-classifier")):
                    codes |= {401, 403, 429}  # always needs a token, and is rate-limited
                if "/canary" in path:
                    codes.add(400)  # a rollout identity the store cannot key (too long, control characters)
                if path == "/v1/ingest":
                    codes.add(403)  # a device token writing another device's windows
                if "requestBody" in op or any(p.get("name") in ("since", "until") for p in op.get("parameters", [])):
                    codes.add(400)
                body = op.get("requestBody", {}).get("content", {})
                if "application/octet-stream" in body or path == "/v1/alertmanager":
                    codes.add(413)
                if op.get("parameters") or "requestBody" in op:
                    codes.add(422)
                if path in GATES:
                    codes.add(412)
                for code in sorted(codes):
                    entry: dict[str, Any] = {"description": _ERRORS[code]}
                    entry["content"] = ({"application/json": {"schema": {"$ref": "#/components/schemas/GateAnswer"}}}
                                        if code == 412 else err)
                    responses[str(code)] = entry
        app.openapi_schema = doc
        return doc

    app.openapi = build  # type: ignore[method-assign]


def swagger_ui_dir() -> Path | None:
    """The directory of Swagger UI's files in the installed ``swagger-ui-bundle``, or None."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    path = Path(swagger_ui_bundle.swagger_ui_path)
    return path if (path / "swagger-ui-bundle.js").is_file() else None


_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
           "favicon-32x32.png": "image/png"}


def install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/docs/assets/*`` from the package's own files."""
    from fastapi.responses import FileResponse

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if swagger_ui_dir() is None:
            return HTMLResponse("Swagger UI is not installed: pip install 'driftline[service]' "
                                "(swagger-ui-bundle). The schema is at /openapi.json.", status_code=404)
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API",
                                   swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css",
                                   swagger_favicon_url="/docs/assets/favicon-32x32.png")

    @app.get("/docs/assets/{name}", include_in_schema=False)
    def asset(name: str) -> Any:
        root = swagger_ui_dir()
        if root is None or name not in _ASSETS:
            return JSONResponse({"error": "not found", "detail": None}, status_code=404)
        return FileResponse(root / name, media_type=_ASSETS[name],
                            headers={"Cache-Control": "public, max-age=86400"})
