"""The running service's parts and the state its rooms share, apart from any transport or web framework.

:class:`Parts` is what the app factory builds once (store, evaluator, ingest counters, dispatcher,
fleet, timings); the FastAPI routes, the Kafka consumer, the background pass and the collectors all
take it from here, so none of them imports another's module to get it. :class:`IngestStats` is the
ingest paths' counters (bumped by :mod:`.ingest`, read by :mod:`.metrics` at scrape time);
:class:`RateLimit` a token bucket the report endpoint takes.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .evaluation import Evaluator
    from .retrain import Dispatcher
    from .settings import ServiceSettings
    from .store import Store

__all__ = ["IngestStats", "Parts", "RateLimit", "num"]


def num(v: Any) -> float:
    """A device-reported number, or 0 when it is not one (a report is never trusted to be well typed)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


@dataclass
class IngestStats:
    """Counters the ingest paths bump; read by the collector at scrape time."""

    envelopes: Counter[tuple[str, str]] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)
    observations: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    windows: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    cohort_rows: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    cohort_last_end: dict[tuple[str, str, str], float] = field(default_factory=dict)
    last_end: dict[tuple[str, str], float] = field(default_factory=dict)
    lag: dict[str, float] = field(default_factory=dict)
    devices: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # model -> device -> report
    lives: dict[tuple[str, str], Any] = field(default_factory=dict)  # (model, device) -> fleet.DeviceLife
    on_device: Callable[[str, str, dict[str, Any]], None] | None = None  # fleet.Fleet queues it for the store
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, transport: str, result: str, nbytes: int, profiles: list[Any] | None = None,
               producer: dict[str, str] | None = None, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self.lock:
            self.envelopes[(transport, result)] += 1
            self.bytes[transport] += nbytes
            if result != "accepted" or not profiles:
                return
            for p in profiles:
                k = p.key
                self.observations[(k.model, k.model_version, k.variant)] += p.rows
                self.windows[(k.model, k.model_version, k.variant)] += 1
                self.last_end[(k.model, k.model_version)] = max(self.last_end.get((k.model, k.model_version), 0), p.end)
                self.lag[k.model] = max(now - p.end, 0.0)
                for label, value in k.cohort:
                    ck = (k.model, label, value)
                    self.cohort_rows[ck] += p.rows
                    self.cohort_last_end[ck] = max(self.cohort_last_end.get(ck, 0.0), p.end)
                if k.source:
                    rep = dict(producer or {})
                    rep.update(seen=now, cohort=dict(k.cohort))
                    self.devices.setdefault(k.model, {})[k.source] = rep
                    self._life(k.model, k.source, rep)

    def _life(self, model: str, source: str, rep: dict[str, Any]) -> None:
        from .fleet import DeviceLife, merge_life

        new = DeviceLife(num(rep.get("started_at")), 0.0, num(rep.get("cpu_seconds")))
        self.lives[(model, source)] = merge_life(self.lives.get((model, source)), new)
        if self.on_device is not None:
            self.on_device(model, source, rep)


class RateLimit:
    """A token bucket: ``per_minute`` requests a minute, bursts of up to ``burst``; thread-safe."""

    def __init__(self, per_minute: float, burst: int = 2, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0 when a request may go now, else seconds until one may."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


@dataclass
class Parts:
    """The service's parts, built once per app by the factory."""

    settings: ServiceSettings
    store: Store
    evaluator: Evaluator
    stats: IngestStats
    dispatcher: Dispatcher
    registry: Any = None
    fleet: Any = None  # fleet.Fleet: leadership and fleet state rebuilt from the store
    timings: Any = None  # observability.Timings: the duration histograms
    report_limit: RateLimit | None = None
    performance: Any = None  # performance.PerformanceView: delayed labels merged per version and cohort
    estimates: Any = None  # estimate.Estimates: label-free performance estimates, refreshed by the background pass
    multivariate: Any = None  # multivariate.MultivariateMonitor: reconstruction-error drift
    device_health: Any = None  # device_health.DeviceHealth: leak and latency trends per device
    conformance: Any = None  # conformance.ConformanceBook: the devices' newest golden-set results
    shadow: Any = None  # shadow.ShadowJudge: shadow models judged against live
