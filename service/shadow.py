"""Shadow models: is the model a sidecar mirrors traffic to ready to replace the live one?

The sidecar pairs the live and shadow answers to the same requests and ships the paired summary
with the shadow stream's windows (profile key ``shadow``, variant ``shadow``; see
edge_sidecar/shadow.py). Here the summaries of a model's shadow windows over the last
``shadow.lookback_seconds`` are merged (they are exact counts and moments, so the merge is the sum
of what every device and replica saw) and judged by :func:`driftline.stats.shadow.evaluate_shadow`,
with each side's latency sketch merged from its windows (live: every other variant of the model).

The background pass (service/app.py) calls :meth:`ShadowJudge.evaluate_all`; the collector, the API
and the status page read the newest frozen :class:`ShadowState` per model. One model's failure is
counted (``driftline_shadow_evaluation_errors_total``) and logged once; the others go on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from driftline.pairing import PairedSummary
from driftline.profile import RuntimeStats
from driftline.stats.shadow import SHADOW_VERDICTS, ShadowResult, evaluate_shadow

from .errors import NotFound
from .settings import ServiceSettings
from .store import Store

__all__ = ["ShadowCollector", "ShadowJudge", "ShadowState"]

log = logging.getLogger("driftline.service.shadow")


@dataclass(frozen=True)
class ShadowState:
    """One judgement of a model's shadow over ``(since, until]``: the core's result and its inputs."""

    model: str
    since: float
    until: float
    windows: int
    shadow_versions: tuple[str, ...]
    evaluated_at: float
    result: ShadowResult

    @property
    def verdict(self) -> str:
        return self.result.verdict

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``GET /v1/models/{model}/shadow`` and of the status page's section."""
        out = self.result.to_dict()
        out.update(model=self.model, since=self.since, until=self.until, windows=self.windows,
                   shadow_versions=list(self.shadow_versions), evaluated_at=self.evaluated_at)
        return out


class ShadowJudge:
    """Merges stored shadow summaries and keeps each model's newest :class:`ShadowState`."""

    def __init__(self, store: Store, settings: ServiceSettings) -> None:
        self.store = store
        self.settings = settings.shadow
        self.config = self.settings.config()
        self.errors = 0
        self._states: dict[str, ShadowState] = {}
        self._failing: set[str] = set()
        self._lock = threading.Lock()

    def evaluate(self, model: str, now: float | None = None) -> ShadowState:
        """Judge ``model``'s shadow now (NotFound when no shadow window carries pairs); keeps the result."""
        now = time.time() if now is None else now
        since = now - self.settings.lookback_seconds
        rows = self.store.windows(model, since=since, until=now)
        shadow = [r for r in rows if r.variant == self.settings.variant]
        summaries = [r.profile.shadow for r in shadow if r.profile.shadow is not None]
        if not summaries:
            raise NotFound(f"no shadow pairs for model {model!r}",
                           "enable proxy.shadow in the model's sidecar (docs/sidecar.md)")
        live_rt, shadow_rt = RuntimeStats(), RuntimeStats()
        for r in rows:
            if r.profile.runtime is not None:
                (shadow_rt if r.variant == self.settings.variant else live_rt).merge(r.profile.runtime)
        result = evaluate_shadow(PairedSummary.merged(summaries), self.config, live_runtime=live_rt,
                                 shadow_runtime=shadow_rt)
        state = ShadowState(model, since, now, len(shadow), tuple(sorted({r.version for r in shadow})), now, result)
        with self._lock:
            self._states[model] = state
        return state

    def evaluate_all(self, now: float | None = None) -> None:
        """Judge every model that has a shadow stream; one failure never skips another."""
        now = time.time() if now is None else now
        for m in self.store.models():
            if self.settings.variant not in m["variants"]:
                continue
            name = m["name"]
            try:
                self.evaluate(name, now)
            except NotFound:
                continue
            except Exception as exc:
                self.errors += 1
                if name not in self._failing:
                    self._failing.add(name)
                    log.error("shadow evaluation of %s failed: %s: %s", name, type(exc).__name__, exc)
                continue
            self._failing.discard(name)

    def snapshot(self) -> Mapping[str, ShadowState]:
        """The newest state per model, copied under the lock."""
        with self._lock:
            return MappingProxyType(dict(self._states))


class ShadowCollector:
    """Every ``driftline_shadow_*`` family from the judge's newest states (read at scrape time)."""

    def __init__(self, judge: ShadowJudge, visible: Callable[[], bool] = lambda: True) -> None:
        self.judge = judge
        self.visible = visible

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("driftline_shadow_evaluation_errors", "Shadow evaluations that failed (the "
                                  "model is in the log).", value=self.judge.errors)
        if not self.visible():
            return
        states = sorted(self.judge.snapshot().items())
        agree = GaugeMetricFamily("driftline_shadow_agreement_ratio", "Share of paired rows whose predicted "
                                  "labels agree, shadow vs live.", labels=["model"])
        diff = GaugeMetricFamily("driftline_shadow_score_difference_mean", "Mean paired score difference, "
                                 "shadow minus live.", labels=["model"])
        lat = GaugeMetricFamily("driftline_shadow_latency_p99_seconds", "p99 inference latency per side.",
                                labels=["model", "side"])
        err = GaugeMetricFamily("driftline_shadow_error_ratio", "Share of paired requests that failed, per side.",
                                labels=["model", "side"])
        pairs = GaugeMetricFamily("driftline_shadow_paired_requests", "Requests answered by both sides in the "
                                  "lookback.", labels=["model"])
        dropped = GaugeMetricFamily("driftline_shadow_mirrors_dropped", "Mirrors the sidecars dropped (queue "
                                    "full) in the lookback.", labels=["model"])
        verdict = GaugeMetricFamily("driftline_shadow_verdict", "1 for the shadow's current verdict (ready, "
                                    "worse, undecided), else 0.", labels=["model", "verdict"])
        for model, st in states:
            r = st.result
            if r.agreement is not None:
                agree.add_metric([model], r.agreement)
            if r.score_diff_mean is not None:
                diff.add_metric([model], r.score_diff_mean)
            for side in ("live", "shadow"):
                if r.latency_p99_seconds.get(side) is not None:
                    lat.add_metric([model, side], r.latency_p99_seconds[side])  # type: ignore[arg-type]
                if r.error_ratio.get(side) is not None:
                    err.add_metric([model, side], r.error_ratio[side])  # type: ignore[arg-type]
            pairs.add_metric([model], r.summary["requests"])
            dropped.add_metric([model], r.summary["dropped"])
            for v in SHADOW_VERDICTS:
                verdict.add_metric([model, v], 1.0 if r.verdict == v else 0.0)
        yield from (agree, diff, lat, err, pairs, dropped, verdict)
