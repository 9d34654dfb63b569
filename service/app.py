"""The app factory: ``create_app(settings)`` builds a service with no import-time side effects.

The lifespan opens the store, starts the background evaluator (drift, canaries, the internal
retraining policy, retention roll-ups), the retraining dispatcher and, when configured, the Kafka
consumer; it stops them in reverse order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from driftline import __version__

from .api import alertmanager, canary, ingest, models, pages
from .api.deps import Parts
from .errors import ServiceError
from .evaluation import Evaluator
from .metrics import IngestStats, build_registry
from .retrain import Dispatcher, from_evaluations
from .settings import ServiceSettings
from .store import Store

__all__ = ["Background", "create_app", "open_parts"]

log = logging.getLogger("driftline.service")


class Background:
    """One thread that evaluates every ``interval_seconds``: drift, canaries, retrain policy, retention."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="driftline-evaluator", daemon=True)
        self.passes = 0

    def start(self) -> Background:
        self._thread.start()
        return self

    def run_once(self, now: float | None = None) -> None:
        p = self.parts
        now = time.time() if now is None else now
        states = p.evaluator.evaluate_all(now)
        if p.settings.retrain.internal_policy:
            from_evaluations(p.dispatcher, p.evaluator, states, now)
        if self.passes % 20 == 0:
            p.store.roll_up(now, p.settings.retention_raw_days, p.settings.retention_hourly_days)
        self.passes += 1

    def _run(self) -> None:
        interval = self.parts.settings.evaluation.interval_seconds
        while not self._stop.wait(interval):
            try:
                self.run_once()
            except Exception:
                log.exception("background evaluation failed")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def open_parts(settings: ServiceSettings) -> Parts:
    """Open the store and build every part of a running service (no threads started)."""
    store = Store(settings.database_url)
    evaluator = Evaluator(store, settings)
    dispatcher = Dispatcher(store, settings.retrain)
    parts = Parts(settings, store, evaluator, IngestStats(), dispatcher)
    parts.registry = build_registry(evaluator, parts.stats, dispatcher, settings.cohort_top_n)
    for c in settings.canaries:
        if c.model not in store.canaries():
            store.put_canary(c.model, {"baseline_version": c.baseline_version, "canary_version": c.canary_version,
                                       "min_rows": c.min_rows, "min_duration_seconds": c.min_duration_seconds,
                                       "alpha": c.alpha})
    return parts


def create_app(settings: ServiceSettings | None = None, *, background: bool = True) -> FastAPI:
    """A new service app; every part is built here, none at import time."""
    settings = settings or ServiceSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        parts = open_parts(settings)
        app.state.parts = parts
        bg = Background(parts)
        app.state.background = bg
        store = parts.store
        dispatcher = parts.dispatcher
        consumer = None
        app.state.consumer = None
        if settings.kafka.enabled:
            from .kafka_consumer import ConsumerCollector, EnvelopeConsumer

            consumer = app.state.consumer = EnvelopeConsumer(parts)
            parts.registry.register(ConsumerCollector(consumer))
            consumer.start()
        if background:
            dispatcher.start()
            bg.start()
        try:
            yield
        finally:
            if consumer is not None:
                consumer.stop()
            if background:
                bg.stop()
                dispatcher.stop()
            store.close()

    app = FastAPI(title="Driftline", version=__version__, lifespan=lifespan,
                  description="Drift and canary monitoring for ML models on edge devices and in the cloud.")

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errs: list[Any] = [{"loc": list(e.get("loc", [])), "msg": e.get("msg")} for e in exc.errors()]
        return JSONResponse({"error": "invalid request", "detail": errs}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail), "detail": None}, status_code=exc.status_code)

    for r in (ingest.router, models.router, canary.router, alertmanager.router, pages.router):
        app.include_router(r)
    return app
