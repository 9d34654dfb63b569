"""The app factory: ``create_app(settings)`` builds a service with no import-time side effects.

The lifespan opens the store, starts the background evaluator (drift, canaries, the internal
retraining policy, retention roll-ups), the retraining dispatcher and, when configured, the Kafka
consumer; it stops them in reverse order.
"""

from __future__ import annotations

import logging
import math
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

from .api import alertmanager, canary, estimate, ingest, models, multivariate, pages, shadow
from .api.openapi import install_docs, install_openapi
from .conformance import ConformanceBook, ConformanceCollector
from .device_health import DeviceHealth, DeviceHealthCollector
from .errors import ServiceError, TooManyRequests
from .evaluation import Evaluator
from .fleet import Fleet, LeaderCollector, Leadership
from .limits import Caps
from .metrics import build_registry
from .multivariate import MultivariateCollector, MultivariateMonitor
from .observability import HttpTimingMiddleware, Timings, add_runtime_collectors
from .parts import IngestStats, Parts, RateLimit
from .performance import PerformanceCollector, PerformanceView, from_performance
from .performance import router as performance_router
from .retrain import Dispatcher, from_evaluations
from .settings import ServiceSettings
from .shadow import ShadowCollector, ShadowJudge
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
        """One pass; only the leader evaluates (service/fleet.py), and the stages (drift and canaries,
        retraining policy, retention, fleet state) fail independently."""
        p = self.parts
        now = time.time() if now is None else now
        p.store.probe_write(now)  # keeps the store's health current for /healthz and /readyz
        if p.fleet is not None and not p.fleet.leadership.check():
            p.fleet.refresh(now)  # a follower only writes its device reports
            self._device_health(now)
            return
        t0 = time.perf_counter()
        result = "error"
        try:
            states = p.evaluator.evaluate_all(now)
            if p.estimates is not None:
                p.estimates.refresh(now)  # each model version's failure is counted and logged inside
            if p.multivariate is not None:
                p.multivariate.evaluate_all(now)
            if p.shadow is not None:
                p.shadow.evaluate_all(now)  # counts and logs its own failures (service/shadow.py)
            if p.settings.retrain.internal_policy:
                try:
                    from_evaluations(p.dispatcher, p.evaluator, states, now)
                    p.evaluator.succeeded("retrain", "policy")
                except Exception as exc:
                    p.evaluator.failed("retrain", "policy", exc)
            if p.performance is not None:
                try:
                    p.performance.refresh(now)
                    if p.settings.retrain.internal_policy:
                        from_performance(p, p.performance, now)
                    p.evaluator.succeeded("performance", "labels")
                except Exception as exc:
                    p.evaluator.failed("performance", "labels", exc)
            if self.passes % 20 == 0:
                try:
                    p.store.roll_up(now, p.settings.retention_raw_days, p.settings.retention_hourly_days)
                    p.evaluator.succeeded("retention", "roll-up")
                except Exception as exc:
                    p.evaluator.failed("retention", "roll-up", exc)
            if p.fleet is not None:
                p.fleet.refresh(now)
            self._device_health(now)
            result = "ok"
        finally:
            if p.timings is not None:
                p.timings.evaluation.labels(result).observe(time.perf_counter() - t0)
        self.passes += 1

    def _device_health(self, now: float) -> None:
        """Write the device samples; on the leader, fit the leak and latency trends (fails on its own)."""
        p = self.parts
        if p.device_health is None:
            return
        try:
            p.device_health.refresh(now)
            p.evaluator.succeeded("device_health", "trends")
        except Exception as exc:
            p.evaluator.failed("device_health", "trends", exc)

    def _run(self) -> None:
        interval = self.parts.settings.evaluation.interval_seconds
        while True:  # the first pass at once: after a restart the drift gauges are back before a scrape misses them
            try:
                self.run_once()
            except Exception:
                log.exception("background evaluation failed")
            if self._stop.wait(interval):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def open_parts(settings: ServiceSettings) -> Parts:
    """Open the store and build every part of a running service (no threads started)."""
    lim = settings.limits
    store = Store(settings.database_url, pool_size=settings.database_pool_size,
                  timeout_seconds=settings.database_timeout_seconds,
                  caps=Caps(lim.max_models, lim.max_versions_per_model, lim.max_features_per_model,
                            lim.max_feature_series, lim.max_cohort_labels, lim.max_cohort_values))
    evaluator = Evaluator(store, settings)
    dispatcher = Dispatcher(store, settings.retrain)
    parts = Parts(settings, store, evaluator, IngestStats(), dispatcher)
    parts.report_limit = RateLimit(settings.report_rate_per_minute)
    parts.fleet = Fleet(store, parts.stats, Leadership(settings.database_url))
    parts.registry = build_registry(evaluator, parts.stats, dispatcher, settings.cohort_top_n, parts.fleet.exposes)
    add_runtime_collectors(parts.registry)
    parts.registry.register(LeaderCollector(parts.fleet))
    parts.timings = Timings(parts.registry)
    parts.multivariate = MultivariateMonitor(evaluator, z=settings.evaluation.multivariate_z,
                                             min_rows=settings.evaluation.multivariate_min_rows)
    parts.registry.register(MultivariateCollector(parts.multivariate, parts.fleet.exposes))
    dispatcher.on_delivery = parts.timings.on_delivery
    parts.performance = PerformanceView(store, settings.performance)
    parts.registry.register(PerformanceCollector(parts.performance, settings.cohort_top_n))
    from .estimate import EstimateCollector, Estimates

    parts.estimates = Estimates(evaluator, settings.cohort_top_n)
    parts.registry.register(EstimateCollector(parts.estimates, parts.fleet.exposes))
    parts.conformance = ConformanceBook(store, lim.max_versions_per_model, settings.conformance_max_age_seconds)
    parts.registry.register(ConformanceCollector(parts.conformance, settings.conformance_cohorts,
                                                 settings.cohort_top_n, parts.fleet.exposes))
    parts.shadow = ShadowJudge(store, settings)
    parts.registry.register(ShadowCollector(parts.shadow, parts.fleet.exposes))
    parts.fleet.refresh()  # restart-safe: fleet state is rebuilt from the store before the first scrape
    parts.device_health = DeviceHealth(store, settings.device_health, parts.fleet.leadership.check)
    parts.registry.register(DeviceHealthCollector(parts.device_health, parts.fleet.exposes))
    parts.device_health.refresh(force=True)  # trends from the stored samples before the first scrape
    for c in settings.canaries:
        if c.model not in store.canaries():
            store.put_canary(c.model, c.config_dict())
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
            parts.fleet.flush()
            try:
                parts.device_health.flush()
            except Exception as exc:  # noqa: BLE001 - the store is gone at shutdown: samples are replaced soon
                log.warning("device samples not written at shutdown: %s", exc)
            parts.fleet.leadership.close()
            store.close()

    app = FastAPI(title="Driftline", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Drift and canary monitoring for ML models on edge devices and in the cloud.")

    app.add_middleware(HttpTimingMiddleware, timings_of=lambda: getattr(getattr(app.state, "parts", None),
                                                                        "timings", None))

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        hdrs = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))} if isinstance(exc, TooManyRequests) else None
        return JSONResponse({"error": exc.message, "detail": exc.detail}, status_code=exc.status, headers=hdrs)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errs: list[Any] = [{"loc": list(e.get("loc", [])), "msg": e.get("msg")} for e in exc.errors()]
        return JSONResponse({"error": "invalid request", "detail": errs}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail), "detail": None}, status_code=exc.status_code)

    for r in (ingest.router, models.router, canary.router, canary.experiments_router, alertmanager.router,
              pages.router, estimate.router, multivariate.router, performance_router,
              shadow.router):
        app.include_router(r)
    install_openapi(app, reads_secured=settings.read_token is not None)  # bearer scheme, typed answers, documented 4xx
    install_docs(app)  # Swagger UI from the package: no CDN
    return app
