"""Label-free performance estimates per model version and cohort, for references that carry a calibration.

The background pass calls :meth:`Estimates.refresh` after the drift evaluation: for every model
version whose uploaded reference has a score calibration (``driftline reference build --label``),
the windows of the current range are merged (all rows, then per cohort value, the top
``cohort_top_n`` values by rows and the rest as ``other``) and :func:`driftline.estimate.estimate_performance`
reads each merged score sketch. The results are frozen values replaced whole under a lock;
:class:`EstimateCollector` reads them at scrape time, the status page and
``GET /v1/models/{model}/estimate`` read the same snapshot. Nothing here computes on a scrape.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html import escape
from types import MappingProxyType
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from driftline.columns import NumericColumn
from driftline.estimate import METRICS, Calibration, EstimateError, EstimateResult, estimate_performance

from .evaluation import Evaluator
from .merging import merge_windows
from .store import WindowRow

__all__ = ["ALL_ROWS", "CohortEstimate", "EstimateCollector", "Estimates", "render_estimates"]

ALL_ROWS = ("", "")
"""The (cohort_label, cohort_value) of the estimate over every row of the range."""


@dataclass(frozen=True, slots=True)
class CohortEstimate:
    """The estimate of one model version over the range, for all rows or one cohort value."""

    model: str
    version: str
    cohort_label: str
    cohort_value: str
    since: float
    until: float
    result: EstimateResult

    def to_dict(self) -> dict[str, Any]:
        return {"cohort_label": self.cohort_label, "cohort_value": self.cohort_value, **self.result.to_dict()}


@dataclass
class Estimates:
    """The newest estimates, per (model, version): a tuple of :class:`CohortEstimate`, replaced whole."""

    evaluator: Evaluator
    top_n: int = 20
    _by_version: dict[tuple[str, str], tuple[CohortEstimate, ...]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    errors: Counter[str] = field(default_factory=Counter)  # model -> failed estimates

    def snapshot(self) -> MappingProxyType[tuple[str, str], tuple[CohortEstimate, ...]]:
        with self._lock:
            return MappingProxyType(dict(self._by_version))

    def refresh(self, now: float | None = None) -> None:
        """Estimate every calibrated model version over the current window; one failure skips only it."""
        now = time.time() if now is None else now
        ev = self.evaluator
        since = now - ev.settings.evaluation.current_window_seconds
        seen: set[tuple[str, str]] = set()
        for model, version, _source in ev.store.references():
            subject = f"{model} {version}"
            try:
                found = self.estimate(model, version, since, now)
            except Exception as exc:  # a bad calibration or window never stops the others
                with self._lock:
                    self.errors[model] += 1
                ev.failed("estimate", subject, exc)
                continue
            ev.succeeded("estimate", subject)
            if found is None:
                continue
            seen.add((model, version))
            with self._lock:
                self._by_version[(model, version)] = found
        with self._lock:
            for gone in set(self._by_version) - seen:
                del self._by_version[gone]

    def estimate(self, model: str, version: str, since: float, until: float) -> tuple[CohortEstimate, ...] | None:
        """The estimates of one version over ``(since, until]``; None without a calibrated reference."""
        ref = self.evaluator.store.reference(model, version)
        if ref is None or ref[0].calibration is None:
            return None
        cal = Calibration.from_dict(ref[0].calibration)
        rows = [r for r in self.evaluator.store.windows(model, version, None, since, until)
                if r.profile.key.variant != "canary"]
        out = [self._one(cal, model, version, ALL_ROWS, rows, since, until)]
        for (label, value), group in sorted(_cohort_groups(rows, self.top_n).items()):
            out.append(self._one(cal, model, version, (label, value), group, since, until))
        return tuple(out)

    @staticmethod
    def _one(cal: Calibration, model: str, version: str, cohort: tuple[str, str], rows: list[WindowRow],
             since: float, until: float) -> CohortEstimate:
        col = merge_windows([r.profile for r in rows]).profile.outputs.get(cal.output) if rows else None
        if col is not None and not isinstance(col, NumericColumn):
            raise EstimateError(f"output {cal.output!r} of {model} {version} is not numeric in the windows")
        result = estimate_performance(cal, col if col is not None else NumericColumn())
        return CohortEstimate(model, version, cohort[0], cohort[1], since, until, result)


def _cohort_groups(rows: Iterable[WindowRow], top_n: int) -> dict[tuple[str, str], list[WindowRow]]:
    """Windows per (label, value); per label the top ``top_n`` values by rows, the rest as ``other``."""
    by_label: dict[str, dict[str, list[WindowRow]]] = {}
    for r in rows:
        for label, value in r.cohort.items():
            by_label.setdefault(label, {}).setdefault(value, []).append(r)
    out: dict[tuple[str, str], list[WindowRow]] = {}
    for label, values in by_label.items():
        ranked = sorted(values.items(), key=lambda kv: (-sum(r.rows for r in kv[1]), kv[0]))
        for i, (value, group) in enumerate(ranked):
            out.setdefault((label, value if i < top_n else "other"), []).extend(group)
    return out


class EstimateCollector:
    """``driftline_model_estimated_performance_*``: the estimates and their bands, read at scrape time."""

    def __init__(self, estimates: Estimates, fleet_visible: Callable[[], bool] = lambda: True) -> None:
        self.estimates = estimates
        self.fleet_visible = fleet_visible

    def collect(self) -> Any:
        labels = ["model", "version", "metric", "cohort_label", "cohort_value"]
        value = GaugeMetricFamily("driftline_model_estimated_performance_ratio",
                                  "Label-free (CBPE) estimate of a performance metric in the current window",
                                  labels=labels)
        lower = GaugeMetricFamily("driftline_model_estimated_performance_lower_ratio",
                                  "Lower end of the estimate's error band", labels=labels)
        upper = GaugeMetricFamily("driftline_model_estimated_performance_upper_ratio",
                                  "Upper end of the estimate's error band", labels=labels)
        rows = GaugeMetricFamily("driftline_model_estimated_performance_rows",
                                 "Scored rows behind the estimate", labels=labels[:2] + labels[3:])
        errors = CounterMetricFamily("driftline_model_estimate_errors", "Estimates that failed (bad calibration "
                                     "or windows), by model", labels=["model"])
        with self.estimates._lock:
            for m, n in self.estimates.errors.items():
                errors.add_metric([m], n)
        if not self.fleet_visible():
            yield errors
            return
        for found in self.estimates.snapshot().values():
            for ce in found:
                key = [ce.model, ce.version]
                cohort = [ce.cohort_label, ce.cohort_value]
                rows.add_metric(key + cohort, ce.result.rows)
                for me in ce.result.metrics:
                    if me.value is None or me.lower is None or me.upper is None:
                        continue
                    value.add_metric([*key, me.name, *cohort], me.value)
                    lower.add_metric([*key, me.name, *cohort], me.lower)
                    upper.add_metric([*key, me.name, *cohort], me.upper)
        yield from (value, lower, upper, rows, errors)


def render_estimates(found: tuple[CohortEstimate, ...] | None) -> str:
    """The status page's card: estimate [lower, upper] per metric, all rows then cohorts (at most 12)."""
    if not found:
        return ""

    def cell(me: Any) -> str:
        if me.value is None:
            return "<td>–</td>"
        return f"<td>{me.value:.3f} <span class=muted>[{me.lower:.3f}, {me.upper:.3f}]</span></td>"

    head = "".join(f"<th>{escape(m.replace('_', ' '))}</th>" for m in METRICS)
    body = []
    for ce in found[:12]:
        who = "all rows" if (ce.cohort_label, ce.cohort_value) == ALL_ROWS else f"{ce.cohort_label}={ce.cohort_value}"
        status = "" if ce.result.status == "ok" else f" <span class=muted>({escape(ce.result.status)})</span>"
        body.append(f"<tr><td>{escape(who)}{status}</td><td>{ce.result.rows}</td>"
                    + "".join(cell(me) for me in ce.result.metrics) + "</tr>")
    return ("<h2>Estimated performance (no labels)</h2><div class=card><p class=muted>Confidence-based "
            f"estimate at threshold {found[0].result.threshold:g} from the score sketch and the reference's "
            "calibration; valid while P(label | score) is unchanged (docs/statistics.md).</p>"
            f"<table><thead><tr><th>rows from</th><th>rows</th>{head}</tr></thead><tbody>{''.join(body)}"
            "</tbody></table></div>")
