"""Property-based API testing against the service's own OpenAPI schema: no 5xx on any client mistake."""

from __future__ import annotations

import time

import numpy as np
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from driftline.service.app import create_app, open_parts
from driftline.service.settings import EvaluationSettings, ServiceSettings
from driftline.wire import decode_envelope
from tests.service_support import envelope, reference_bytes, window


def _app(tmp: str) -> object:
    s = ServiceSettings(database_url=f"sqlite:///{tmp}/schemathesis.sqlite",
                        evaluation=EvaluationSettings(interval_seconds=3600))
    app = create_app(s, background=False)
    parts = open_parts(s)  # the same parts the lifespan builds, opened here so calls work without it
    rng = np.random.default_rng(0)
    parts.store.put_reference("m", "v1", decode_envelope(reference_bytes(rng, "m", "v1", 1000)).profiles[0], "uploaded")
    parts.store.ingest(decode_envelope(envelope(window(rng, "m", "v1", start=time.time() - 60))), "http")
    app.state.parts = parts
    return app


def _tmpdir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="driftline-st-")


schema = schemathesis.openapi.from_asgi("/openapi.json", _app(_tmpdir()))


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case) -> None:
    case.call_and_validate(checks=[not_a_server_error])
