"""Multivariate drift on the service: each window's reconstruction errors against the reference's band.

A reference built with ``driftline reference build --reconstruction`` carries a PCA model and the
reference's own per-row reconstruction errors (:mod:`driftline.reconstruction`); sidecars fetch it
with the reference and sketch every row's error into the window's ``reconstruction`` key. Here the
background pass merges the sketches of the current range (and keeps a verdict per stored window),
and :func:`~driftline.reconstruction.evaluate_reconstruction` decides. Results are frozen values,
replaced whole; :class:`MultivariateCollector` reads them at scrape time and never computes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from driftline.reconstruction import ErrorSketch, ReconstructionResult, evaluate_reconstruction

from .errors import NotFound
from .evaluation import Evaluator

__all__ = ["MAX_WINDOWS", "MultivariateCollector", "MultivariateMonitor", "MultivariateState"]

MAX_WINDOWS = 50
"""Newest stored windows a verdict list shows (the current range's verdict covers them all)."""


@dataclass(frozen=True)
class MultivariateState:
    """The newest multivariate verdict of one model version: over the current range and per window."""

    model: str
    version: str
    model_digest: str
    result: ReconstructionResult
    windows: tuple[tuple[float, float, str, ReconstructionResult], ...]  # (start, end, source, verdict)
    evaluated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "model_digest": self.model_digest,
                "evaluated_at": self.evaluated_at, "current": self.result.to_dict(),
                "windows": [{"start": s, "end": e, "source": src, **r.to_dict()} for s, e, src, r in self.windows]}


@dataclass
class MultivariateMonitor:
    """Evaluates reconstruction drift of every model version whose reference carries a model."""

    evaluator: Evaluator
    z: float = 3.0
    min_rows: int = 100
    _states: Mapping[tuple[str, str], MultivariateState] = field(default_factory=lambda: MappingProxyType({}))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> Mapping[tuple[str, str], MultivariateState]:
        """The newest verdicts (a read-only mapping, replaced whole)."""
        return self._states

    def evaluate(self, model: str, version: str, since: float | None = None,
                 until: float | None = None) -> MultivariateState:
        """The verdict of one model version over ``(since, until]``; :class:`NotFound` without a model."""
        ev = self.evaluator
        since, until = ev.window_range(since, until)
        found = ev.store.reference(model, version)
        if found is None or found[0].reconstruction is None or found[0].reconstruction.model is None:
            raise NotFound(f"the reference of model {model!r} version {version!r} has no reconstruction model",
                           "build it with: driftline reference build DATA --reconstruction ... and upload it")
        ref = found[0].reconstruction
        rows = ev.store.windows(model, version, None, since, until)
        merged: ErrorSketch | None = None
        per_window = []
        for r in rows:
            sk = r.profile.reconstruction
            if sk is None or r.profile.key.variant == "canary":
                continue
            if merged is None:
                merged = ErrorSketch(sk.digest)
            merged.merge_into(sk)
            per_window.append((r.start, r.end, r.source, evaluate_reconstruction(ref, sk, z=self.z,
                                                                                  min_rows=self.min_rows)))
        result = evaluate_reconstruction(ref, merged, z=self.z, min_rows=self.min_rows)
        return MultivariateState(model, version, ref.digest, result, tuple(per_window[-MAX_WINDOWS:]), time.time())

    def evaluate_all(self, now: float | None = None) -> None:
        """One pass over every model version with data and a reconstruction model; failures counted per version."""
        now = time.time() if now is None else now
        ev = self.evaluator
        span = ev.settings.evaluation.current_window_seconds
        out: dict[tuple[str, str], MultivariateState] = {}
        for m in ev.store.models():
            for model, version in sorted({(m["name"], st["version"]) for st in m["streams"]}):
                subject = f"{model} {version} (multivariate)"
                try:
                    out[(model, version)] = self.evaluate(model, version, now - span, now)
                except NotFound:
                    continue
                except Exception as exc:  # one version's failure never skips another
                    ev.failed("drift", subject, exc)
                    continue
                ev.succeeded("drift", subject)
        with self._lock:
            self._states = MappingProxyType(out)


class MultivariateCollector:
    """``driftline_multivariate_drift_*``: the newest reconstruction verdict per model version."""

    def __init__(self, monitor: MultivariateMonitor, visible: Any = lambda: True) -> None:
        self.monitor = monitor
        self.visible = visible

    def collect(self) -> Iterator[Metric]:
        if not self.visible():
            return
        labels = ["model", "version"]
        err = GaugeMetricFamily("driftline_multivariate_drift_error_mean", "Mean per-row reconstruction error "
                                "of the current range (standardised units)", labels=labels)
        ref = GaugeMetricFamily("driftline_multivariate_drift_reference_error_mean", "Mean per-row "
                                "reconstruction error of the reference (standardised units)", labels=labels)
        lower = GaugeMetricFamily("driftline_multivariate_drift_lower_bound", "Lower end of the no-drift band "
                                  "of the mean error (standardised units)", labels=labels)
        upper = GaugeMetricFamily("driftline_multivariate_drift_upper_bound", "Upper end of the no-drift band "
                                  "of the mean error (standardised units)", labels=labels)
        flag = GaugeMetricFamily("driftline_multivariate_drift_detected", "1 when the mean reconstruction error "
                                 "is outside its band", labels=labels)
        rows = GaugeMetricFamily("driftline_multivariate_drift_rows", "Rows whose reconstruction error the "
                                 "current range holds", labels=labels)
        for (m, v), st in sorted(self.monitor.snapshot().items()):
            r = st.result
            for fam, val in ((err, r.error_mean), (ref, r.reference_mean), (lower, r.lower), (upper, r.upper)):
                if val == val:  # NaN (no rows yet) is left out rather than exposed
                    fam.add_metric([m, v], float(val))
            flag.add_metric([m, v], 1.0 if r.drifted else 0.0)
            rows.add_metric([m, v], float(r.rows))
        yield from (err, ref, lower, upper, flag, rows)
