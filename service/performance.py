"""A model's real performance from delayed labels: per window and cohort, gauges, and retraining.

Where labels are joined (``docs/performance.md``):

* **on the device**: the sidecar remembers each prediction by id and joins labels sent to
  ``Monitor.label`` / ``POST /v1/labels``; the joined summary arrives as a zero-row window of the
  *prediction's* window carrying the wire's ``performance`` key, merged exactly once by envelope id;
* **in the cloud**: ``POST /v1/models/{m}/versions/{v}/labels`` takes labels *with their prediction*
  (id, score, label, prediction time, cohort), because the service holds no raw predictions. The body
  becomes the same zero-row windows in one envelope whose id is the batch's ``batch_id``, so a
  retried batch is merged once.

:class:`PerformanceView` (the background pass) merges the summaries of the last ``lookback_seconds``
per model version and cohort; :class:`PerformanceCollector` exposes them as
``driftline_model_performance_*``; :func:`from_performance` starts a retraining through the one
:class:`~driftline.service.retrain.policy.RetrainPolicy` when a configured bound is breached for the
policy's ``sustained_seconds`` (the ``DriftlinePerformanceBelowThreshold`` rule is the Alertmanager
path of the same condition).
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query
from prometheus_client.core import GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from driftline.errors import LabelError, PerformanceError, WireFormatError
from driftline.performance import PerformanceResult, PerformanceSummary, merge_summaries
from driftline.profile import StreamKey, WindowProfile
from driftline.wire import Envelope, decode_envelope, encode_envelope

from .api.deps import PartsDep, ReadAccess, WriteAccess
from .errors import LimitExceeded, Unprocessable
from .ingest import Ingest
from .retrain.request import drift_details

__all__ = ["LabelBatch", "LabelsStored", "PerformanceAnswer", "PerformanceCollector", "PerformanceView", "WindowPerformance", "from_performance",
           "router", "window_performance"]

LOWER_IS_BETTER = frozenset({"ece", "mae", "rmse"})
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "ece", "mae", "rmse")
ALL = "all"
"""The ``cohort`` label of a version's summaries merged over every cohort."""


def cohort_label(cohort: dict[str, str] | Iterable[tuple[str, str]]) -> str:
    """``region=eu,shift=night`` (sorted), or ``all``."""
    items = sorted(cohort.items() if isinstance(cohort, dict) else cohort)
    return ",".join(f"{k}={v}" for k, v in items) or ALL


@dataclass(frozen=True)
class WindowPerformance:
    """The performance of one window and cohort (``cohort == "all"``: every cohort merged)."""

    start: float
    end: float
    cohort: str
    result: PerformanceResult

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "cohort": self.cohort, **self.result.to_dict()}


def _merge(groups: dict[Any, list[PerformanceSummary]]) -> dict[Any, PerformanceSummary]:
    out = {}
    for key, summaries in groups.items():
        try:
            merged = merge_summaries(summaries)
        except PerformanceError:  # summaries of another threshold or task: the newest setting wins
            merged = merge_summaries(s for s in summaries if s.threshold == summaries[-1].threshold
                                     and s.task == summaries[-1].task)
        if merged is not None:
            out[key] = merged
    return out


def window_performance(profiles: Iterable[WindowProfile]) -> list[WindowPerformance]:
    """Per window start and cohort (and ``all`` cohorts), oldest first, from stored profiles."""
    groups: dict[tuple[float, float, str], list[PerformanceSummary]] = {}
    for p in profiles:
        if p.performance is None:
            continue
        groups.setdefault((p.start, p.end, cohort_label(p.key.cohort)), []).append(p.performance)
        groups.setdefault((p.start, p.end, ALL), []).append(p.performance) if p.key.cohort else None
    return [WindowPerformance(s, e, c, summ.result()) for (s, e, c), summ in sorted(_merge(groups).items())]


# ---- the background view and its gauges ----------------------------------------------------------
@dataclass
class PerformanceView:
    """The newest merged performance per (model, version, cohort) over ``lookback_seconds``."""

    store: Any
    settings: Any  # PerformanceSettings
    results: dict[tuple[str, str, str], PerformanceResult] = field(default_factory=dict)
    below_since: dict[tuple[str, str], float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self, now: float) -> None:
        """Merge the recent label summaries (zero-row windows: raw windows within the lookback)."""
        rows = self.store.query("SELECT model, version, cohort, profile FROM windows WHERE rows_observed = 0 "
                                "AND end_ts > ?", (now - self.settings.lookback_seconds,))
        from .store import _stored  # the store's own trusted decoder of blobs it wrote

        groups: dict[tuple[str, str, str], list[PerformanceSummary]] = {}
        for model, version, cohort, blob in rows:
            perf = _stored(blob).performance
            if perf is None:
                continue
            groups.setdefault((model, version, cohort_label(json.loads(cohort))), []).append(perf)
            groups.setdefault((model, version, ALL), []).append(perf) if json.loads(cohort) else None
        results = {k: s.result() for k, s in _merge(groups).items()}
        below = {}
        for (m, v, c), r in results.items():
            if c == ALL and self.breaches(r):
                below[(m, v)] = self.below_since.get((m, v), now)
        with self._lock:
            self.results, self.below_since = results, below

    def breaches(self, r: PerformanceResult) -> list[str]:
        """The configured bounds ``r`` breaks (none below ``min_labelled`` labels)."""
        if r.labelled < self.settings.min_labelled:
            return []
        out = []
        for name, bound in self.settings.thresholds.items():
            v = r.metric(name)
            if v is not None and (v > bound if name in LOWER_IS_BETTER else v < bound):
                out.append(name)
        return out

    def snapshot(self) -> tuple[dict[tuple[str, str, str], PerformanceResult], dict[tuple[str, str], float]]:
        with self._lock:
            return dict(self.results), dict(self.below_since)


class PerformanceCollector:
    """``driftline_model_performance_*`` per model, version and cohort, read at scrape time."""

    def __init__(self, view: PerformanceView, top_n: int = 20) -> None:
        self.view = view
        self.top_n = top_n

    def collect(self) -> Iterator[GaugeMetricFamily]:
        results, below = self.view.snapshot()
        labels = ["model", "version", "cohort"]
        fams = {m: GaugeMetricFamily(f"driftline_model_performance_{m}_ratio" if m not in ("mae", "rmse")
                                     else f"driftline_model_performance_{m}",
                                     f"{m} of the labelled predictions of the lookback", labels=labels)
                for m in METRICS}
        n = GaugeMetricFamily("driftline_model_performance_labelled_predictions",
                              "labelled predictions in the lookback", labels=labels)
        bad = GaugeMetricFamily("driftline_model_performance_below_threshold",
                                "1 when a configured performance bound is breached (cohort all)",
                                labels=["model", "version"])
        per_version: dict[tuple[str, str], list[tuple[str, PerformanceResult]]] = {}
        for (m, v, c), r in results.items():
            per_version.setdefault((m, v), []).append((c, r))
        for (m, v), items in sorted(per_version.items()):
            items.sort(key=lambda cr: (cr[0] != ALL, -cr[1].labelled, cr[0]))
            for c, r in items[: self.top_n + 1]:  # bounded: "all" and the top_n largest cohorts
                n.add_metric([m, v, c], r.labelled)
                for name in METRICS:
                    val = r.metric(name)
                    if val is not None:
                        fams[name].add_metric([m, v, c], val)
            bad.add_metric([m, v], 1.0 if (m, v) in below else 0.0)
        yield from fams.values()
        yield n
        yield bad


def from_performance(parts: Any, view: PerformanceView, now: float) -> int:
    """Embedded path: request a retraining for versions whose bound has been breached long enough."""
    policy = parts.dispatcher.policy
    results, below = view.snapshot()
    queued = 0
    for (m, v), since in below.items():
        if not policy.should_retrain(since, now):
            continue
        episode = f"performance|{m}|{v}|{since:.3f}"
        if not parts.dispatcher.first_sight(episode):
            continue
        r = results[(m, v, ALL)]
        trigger = {"source": "service", "reason": "performance", "below_since": since,
                   "breached": view.breaches(r), "sustained_seconds": policy.sustained_seconds,
                   "performance": r.to_dict()}
        try:
            queued += parts.dispatcher.request(m, v, "performance below threshold", episode,
                                               drift_details(parts.evaluator, m, v), trigger, now)
        except Exception as exc:
            parts.dispatcher.forget(episode)
            parts.evaluator.failed("retrain", f"{m} {v} performance", exc)
    return queued


# ---- the cloud's label upload --------------------------------------------------------------------
class LabelIn(BaseModel):
    """One label with the prediction it is about."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    id: Annotated[str, Field(min_length=1, max_length=256)]
    score: float = Field(ge=-1e12, le=1e12, description="the prediction: the positive class's score (binary) "
                         "or the value (regression)")
    label: float = Field(ge=-1e12, le=1e12)
    time: float = Field(ge=0, le=1e11, description="the prediction's time, epoch seconds: picks its window")
    cohort: Annotated[dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=128)]],
                      Field(max_length=8)] = {}
    variant: Annotated[str, Field(max_length=64)] = "default"
    source: Annotated[str, Field(max_length=128)] = ""


class LabelBatch(BaseModel):
    """A batch of labels; ``batch_id`` makes a retried upload a no-op."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    batch_id: uuid.UUID | None = None
    task: Literal["binary", "regression"] = "binary"
    threshold: float = Field(0.5, ge=0, le=1)
    window_seconds: float = Field(60.0, ge=1, le=86400)
    labels: list[LabelIn] = Field(min_length=1, max_length=10_000)


class LabelsStored(BaseModel):
    """What happened to a label batch; ``duplicate``: its ``batch_id`` was merged before (a no-op)."""

    batch_id: str
    result: Literal["accepted", "duplicate"]
    labels: int = Field(ge=0)
    windows: int = Field(ge=0)


class WindowPerformanceOut(BaseModel):
    """One window and cohort; metrics are null where the labels do not define them."""

    model_config = ConfigDict(extra="allow")
    start: float
    end: float
    cohort: str
    task: str
    labelled: int


class PerformanceAnswer(BaseModel):
    model: str
    version: str
    windows: list[WindowPerformanceOut]


router = APIRouter(prefix="/v1/models", tags=["performance"])


def batch_profiles(model: str, version: str, body: LabelBatch) -> list[WindowProfile]:
    """The batch as zero-row windows with their summaries; raises :class:`LabelError`."""
    ids = [x.id for x in body.labels]
    if len(set(ids)) != len(ids):
        raise LabelError("a prediction id appears twice in one batch", "duplicate")
    w = body.window_seconds
    groups: dict[tuple[Any, ...], list[LabelIn]] = {}
    for x in body.labels:
        if not math.isfinite(x.time):
            raise LabelError(f"label {x.id!r}: time must be finite", "wrong_type")
        groups.setdefault((math.floor(x.time / w) * w, x.variant, x.source, tuple(sorted(x.cohort.items()))),
                          []).append(x)
    out = []
    for (start, variant, source, cohort), items in sorted(groups.items()):
        s = PerformanceSummary(body.task, body.threshold)
        s.update(np.array([x.score for x in items]), np.array([x.label for x in items]))
        p = WindowProfile(StreamKey(model, version, variant, source, cohort), start, start + w)
        p.performance = s
        out.append(p)
    return out


@router.post("/{model}/versions/{version}/labels", dependencies=[WriteAccess], response_model=LabelsStored)
async def upload_labels(model: str, version: str, body: LabelBatch, parts: PartsDep) -> dict[str, Any]:
    """Labels with their predictions, merged into the predictions' windows exactly once per ``batch_id``.

    A label that cannot be used (a binary label not 0/1, a score outside [0, 1], an id twice) is 422
    and nothing of the batch is stored.
    """
    try:
        profiles = batch_profiles(model, version, body)
    except LabelError as exc:
        parts.stats.record("http", "rejected", 0)
        raise Unprocessable(f"labels refused ({exc.reason}): {exc}") from None
    env = Envelope(profiles, producer={"name": "driftline-labels"},
                   envelope_id=str(body.batch_id or uuid.uuid4()))
    raw = encode_envelope(env)
    try:  # the same bounds as any envelope (names, cohort labels, counts), then stored as one
        env = decode_envelope(raw, max_bytes=max(parts.settings.max_body_bytes, len(raw)))
    except WireFormatError as exc:
        parts.stats.record("http", "rejected", len(raw))
        raise Unprocessable(f"labels refused: {exc}") from None
    (res,) = await run_in_threadpool(Ingest(parts, "http").store, [(env, raw)])
    if res.result == "limited":
        raise LimitExceeded(res.reason or "a configured limit was reached")
    return {"batch_id": res.envelope_id, "result": res.result, "labels": len(body.labels),
            "windows": len(profiles)}


@router.get("/{model}/versions/{version}/performance", dependencies=[ReadAccess],
            response_model=PerformanceAnswer)
async def performance(model: str, version: str, parts: PartsDep,
                      since: Annotated[float | None, Query()] = None,
                      until: Annotated[float | None, Query()] = None) -> dict[str, Any]:
    """Performance per window and cohort (``cohort: "all"`` merges the cohorts) from delayed labels."""
    rows = await run_in_threadpool(parts.store.windows, model, version, None, since, until)
    return {"model": model, "version": version,
            "windows": [w.to_dict() for w in window_performance(r.profile for r in rows)]}
