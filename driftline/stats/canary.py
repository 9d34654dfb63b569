"""A/B canary analysis between two model versions, from the two arms' merged profiles.

Every comparison carries an always-valid confidence interval (see :mod:`.sequential`), so the
verdict may be recomputed after every window without inflating false rollbacks. Guardrails give a
metric a bad direction and a tolerance; a canary that merely differs is not a regression unless a
guardrail says so. With ``g`` guardrails each is tested at ``alpha / g`` (Bonferroni) and each arm's
bound at half of that, so the chance of any false rollback over the whole experiment is <= alpha.

Verdict: ``rollback`` as soon as one guardrail's interval lies entirely beyond its tolerance in the
bad direction; ``promote`` once both arms have ``min_rows`` and ``min_duration_seconds`` has passed and
every promotion-blocking guardrail's interval lies entirely within its tolerance; else ``continue``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as typed_dataclass

from ..columns import CategoricalColumn, NumericColumn
from ..errors import CanaryConfigError
from ..profile import WindowProfile
from .sequential import always_valid_p_value, dkw_uniform_epsilon, mean_cs_half_width

__all__ = ["DEFAULT_GUARDRAILS", "METRICS", "CanaryConfig", "CanaryResult", "Guardrail", "evaluate_canary"]

METRICS = ("score_ks", "score_auc", "score_mean", "positive_rate", "label_mix_tvd", "error_rate",
           "latency_p50", "latency_p95", "latency_p99", "missing_rate")

Interval = Callable[[float], tuple[float, float]]  # alpha -> (lo, hi) of the effect


_TYPED = ConfigDict(extra="forbid", allow_inf_nan=False)


@typed_dataclass(frozen=True, config=_TYPED)
class Guardrail:
    """A metric that must not move past ``tolerance`` in its bad ``direction``.

    ``relative`` tolerances are ratios (0.10 = 10% higher); ``blocks_promotion`` guardrails must be
    shown within tolerance before ``promote`` (others can only trigger a rollback). A pydantic
    dataclass, so a bad value (a string tolerance, an unknown key) is refused when it is built.
    """

    metric: str
    direction: str = "increase"  # "increase", "decrease" or "any"
    tolerance: float = 0.0
    relative: bool = False
    blocks_promotion: bool = True

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise CanaryConfigError(f"unknown canary metric {self.metric!r} (known: {', '.join(METRICS)})")
        if self.direction not in ("increase", "decrease", "any"):
            raise CanaryConfigError("direction must be 'increase', 'decrease' or 'any'")
        if self.tolerance < 0:
            raise CanaryConfigError("tolerance must be >= 0")

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "direction": self.direction, "tolerance": self.tolerance,
                "relative": self.relative, "blocks_promotion": self.blocks_promotion}


DEFAULT_GUARDRAILS: tuple[Guardrail, ...] = (
    Guardrail("score_mean", "any", 0.05),
    Guardrail("score_ks", "increase", 0.2, blocks_promotion=False),
    Guardrail("positive_rate", "any", 0.05, blocks_promotion=False),
    Guardrail("label_mix_tvd", "increase", 0.1, blocks_promotion=False),
    Guardrail("error_rate", "increase", 0.02),
    Guardrail("latency_p50", "increase", 0.20, relative=True),
    Guardrail("latency_p99", "increase", 0.10, relative=True, blocks_promotion=False),
    Guardrail("missing_rate", "increase", 0.02),
)


@typed_dataclass(frozen=True, config=_TYPED)
class CanaryConfig:
    """One canary experiment: the two versions, the guardrails and when a decision may be made.

    The one typed shape of a canary configuration: the service's ``PUT .../canary`` body, its
    ``canaries:`` settings and the statistics all validate through this class, so a value that
    would fail later (``min_rows: "abc"``) is refused before anything is stored.
    ``max_duration_seconds`` bounds an experiment: with no decision by then the service calls it
    ``inconclusive`` (the statistics never look at it).
    """

    baseline_version: str = Field(min_length=1, max_length=128)
    canary_version: str = Field(min_length=1, max_length=128)
    guardrails: tuple[Guardrail, ...] = DEFAULT_GUARDRAILS
    score_output: str | None = None
    label_output: str | None = None
    positive_threshold: float = 0.5
    alpha: float = 0.05
    min_rows: int = Field(1000, ge=1)
    min_duration_seconds: float = Field(300.0, ge=0)
    max_duration_seconds: float = Field(3600.0, gt=0)
    min_rows_rollback: int = Field(50, ge=1)
    t_star: float = Field(1000.0, gt=0)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise CanaryConfigError("alpha must be in (0, 1)")
        if self.baseline_version == self.canary_version:
            raise CanaryConfigError("baseline_version and canary_version must differ")
        if len(self.guardrails) == 0:
            raise CanaryConfigError("at least one guardrail is needed")
        if self.max_duration_seconds < self.min_duration_seconds:
            raise CanaryConfigError("max_duration_seconds must be >= min_duration_seconds")


@dataclass(frozen=True)
class CanaryResult:
    """The verdict, why, and every comparison with its always-valid interval (an immutable value)."""

    verdict: str
    reasons: tuple[str, ...]
    rows: Mapping[str, int]
    comparisons: tuple[Mapping[str, Any], ...]
    duration_s: float
    config: CanaryConfig
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (fresh lists and dicts: the caller may change them)."""
        return {
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "baseline_version": self.config.baseline_version,
            "canary_version": self.config.canary_version,
            "rows": dict(self.rows),
            "duration_seconds": round(self.duration_s, 3),
            "alpha": self.config.alpha,
            "comparisons": [_plain(c) for c in self.comparisons],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], config: CanaryConfig) -> CanaryResult:
        """Read back :meth:`to_dict` (a stored decision) under the experiment's ``config``."""
        return cls(str(raw["verdict"]), tuple(str(r) for r in raw.get("reasons", ())),
                   {str(k): int(v) for k, v in (raw.get("rows") or {}).items()},
                   tuple(dict(c) for c in raw.get("comparisons", ())), float(raw.get("duration_seconds", 0.0)),
                   config)

    def decided(self, verdict: str, reason: str) -> CanaryResult:
        """The same result with another verdict and one more reason (the service's ``inconclusive``)."""
        return replace(self, verdict=verdict, reasons=(*self.reasons, reason))


def _plain(value: Any) -> Any:
    """A deep copy of JSON-shaped data, so a caller changing its copy never changes the value."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---- per-metric estimates: (baseline value, canary value, effect, interval(alpha)) --------------

def _bernoulli(b_hits: float, b_n: float, c_hits: float, c_n: float, t_star: float, slack: float = 0.0):
    pb, pc = b_hits / b_n, c_hits / c_n

    def interval(a: float) -> tuple[float, float]:
        hb = mean_cs_half_width(b_n, max(pb * (1 - pb), 1.0 / b_n), a / 2, t_star) + slack
        hc = mean_cs_half_width(c_n, max(pc * (1 - pc), 1.0 / c_n), a / 2, t_star) + slack
        return (pc - hc) - (pb + hb), (pc + hc) - (pb - hb)

    return pb, pc, pc - pb, interval


def _score_mean(b: NumericColumn, c: NumericColumn, t_star: float):
    def interval(a: float) -> tuple[float, float]:
        hb = mean_cs_half_width(b.count, b.std ** 2 if b.count > 1 else 1.0, a / 2, t_star)
        hc = mean_cs_half_width(c.count, c.std ** 2 if c.count > 1 else 1.0, a / 2, t_star)
        d = c.mean - b.mean
        return d - hb - hc, d + hb + hc

    return b.mean, c.mean, c.mean - b.mean, interval


def _grid_cdfs(b: NumericColumn, c: NumericColumn, grid: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ranks = np.linspace(0, 1, grid + 1)
    pts = np.unique(np.concatenate((b.quantiles(ranks), c.quantiles(ranks))).astype(np.float32))
    return pts, b.cdf(pts), c.cdf(pts)


def _dkw_interval(est: float, b: NumericColumn, c: NumericColumn, lo_clip: float, hi_clip: float):
    def interval(a: float) -> tuple[float, float]:
        w = dkw_uniform_epsilon(b.count, a / 2) + dkw_uniform_epsilon(c.count, a / 2) + b.rank_error + c.rank_error
        return max(lo_clip, est - w), min(hi_clip, est + w)

    return interval


def _score_ks(b: NumericColumn, c: NumericColumn):
    _, fb, fc = _grid_cdfs(b, c)
    d = float(np.max(np.abs(fb - fc))) if fb.size else 0.0
    return 0.0, d, d, _dkw_interval(d, b, c, 0.0, 1.0)


def _score_auc(b: NumericColumn, c: NumericColumn):
    """P(canary score > baseline score) + half of ties, from the two sketches (Mann-Whitney U / nm)."""
    mids = (np.arange(512) + 0.5) / 512
    qc = c.quantiles(mids).astype(np.float32)
    below = np.asarray(b.kll.get_cdf(np.unique(qc), inclusive=False), dtype=np.float64)[:-1]
    at_or_below = np.asarray(b.kll.get_cdf(np.unique(qc), inclusive=True), dtype=np.float64)[:-1]
    idx = np.searchsorted(np.unique(qc), qc)
    theta = float(np.mean(0.5 * (below[idx] + at_or_below[idx])))
    return 0.5, theta, theta - 0.5, _dkw_interval(theta - 0.5, b, c, -0.5, 0.5)


def _latency(b: Any, c: Any, q: float):
    kb, kc = b.latency_ms, c.latency_ms
    vb, vc = float(kb.get_quantile(q)), float(kc.get_quantile(q))

    def interval(a: float) -> tuple[float, float]:
        eb = dkw_uniform_epsilon(kb.n, a / 2) + kb.normalized_rank_error(False)
        ec = dkw_uniform_epsilon(kc.n, a / 2) + kc.normalized_rank_error(False)
        c_lo = float(kc.get_quantile(max(q - ec, 0.0)))
        c_hi = float(kc.get_quantile(min(q + ec, 1.0)))
        b_lo = float(kb.get_quantile(max(q - eb, 0.0)))
        b_hi = float(kb.get_quantile(min(q + eb, 1.0)))
        lo = c_lo / b_hi - 1.0 if b_hi > 0 else -math.inf
        hi = c_hi / b_lo - 1.0 if b_lo > 0 else math.inf
        return lo, hi

    return vb, vc, (vc / vb - 1.0) if vb > 0 else math.nan, interval


def _label_tvd(b: CategoricalColumn, c: CategoricalColumn, t_star: float):
    fb, fc = b.frequencies(), c.frequencies()
    cats = sorted(set(fb) | set(fc))
    pb = np.array([fb.get(k, 0) for k in cats], dtype=np.float64) / max(b.count, 1)
    pc = np.array([fc.get(k, 0) for k in cats], dtype=np.float64) / max(c.count, 1)
    tvd = float(0.5 * np.abs(pb - pc).sum())
    k = max(len(cats), 1)

    def interval(a: float) -> tuple[float, float]:
        w = 0.0
        for p, n in ((pb, b.count), (pc, c.count)):
            w += float(sum(mean_cs_half_width(n, max(x * (1 - x), 1.0 / n), a / (2 * k), t_star) for x in p))
        w *= 0.5
        return max(0.0, tvd - w), min(1.0, tvd + w)

    return 0.0, tvd, tvd, interval


def _missing(p: WindowProfile) -> tuple[float, float]:
    miss = present = 0
    for col in p.features.values():
        present += col.rows - col.absent
        miss += col.missing + (col.nan if isinstance(col, NumericColumn) else 0)
    return float(miss), float(present)


# ---- the evaluation -------------------------------------------------------------------------------

def _pick_output(p: WindowProfile, name: str | None, kind: type) -> Any:
    if name is not None:
        col = p.outputs.get(name)
        return col if isinstance(col, kind) else None
    return next((c for c in p.outputs.values() if isinstance(c, kind)), None)


def _estimate(metric: str, cfg: CanaryConfig, b: WindowProfile, c: WindowProfile):
    """(baseline, canary, effect, interval) or None when the arms lack the data for the metric."""
    if metric in ("score_ks", "score_auc", "score_mean", "positive_rate"):
        sb, sc = _pick_output(b, cfg.score_output, NumericColumn), _pick_output(c, cfg.score_output, NumericColumn)
        if sb is None or sc is None or min(sb.count, sc.count) == 0:
            return None
        if metric == "score_ks":
            return _score_ks(sb, sc)
        if metric == "score_auc":
            return _score_auc(sb, sc)
        if metric == "score_mean":
            return _score_mean(sb, sc, cfg.t_star)
        thr = np.array([cfg.positive_threshold], dtype=np.float32)
        pos_b = sb.count * (1.0 - float(sb.kll.get_cdf(thr, inclusive=False)[0]))
        pos_c = sc.count * (1.0 - float(sc.kll.get_cdf(thr, inclusive=False)[0]))
        return _bernoulli(pos_b, sb.count, pos_c, sc.count, cfg.t_star, slack=sb.rank_error + sc.rank_error)
    if metric == "label_mix_tvd":
        lb, lc = _pick_output(b, cfg.label_output, CategoricalColumn), _pick_output(c, cfg.label_output, CategoricalColumn)
        if lb is None or lc is None or min(lb.count, lc.count) == 0:
            return None
        return _label_tvd(lb, lc, cfg.t_star)
    if metric == "error_rate":
        eb = b.runtime.errors if b.runtime else 0
        ec = c.runtime.errors if c.runtime else 0
        if b.rows + eb == 0 or c.rows + ec == 0:
            return None
        return _bernoulli(eb, b.rows + eb, ec, c.rows + ec, cfg.t_star)
    if metric.startswith("latency_p"):
        if b.runtime is None or c.runtime is None or b.runtime.latency_ms.is_empty() or c.runtime.latency_ms.is_empty():
            return None
        return _latency(b.runtime, c.runtime, int(metric[len("latency_p"):]) / 100.0)
    if metric == "missing_rate":
        mb, nb = _missing(b)
        mc, nc = _missing(c)
        if nb == 0 or nc == 0:
            return None
        return _bernoulli(mb, nb, mc, nc, cfg.t_star)
    raise CanaryConfigError(f"unknown metric {metric}")


def _judge(g: Guardrail, lo: float, hi: float) -> str:
    tol = g.tolerance
    bad_up = g.direction in ("increase", "any")
    bad_down = g.direction in ("decrease", "any")
    if (bad_up and lo > tol) or (bad_down and hi < -tol):
        return "regression"
    if (not bad_up or hi <= tol) and (not bad_down or lo >= -tol):
        return "ok"
    return "inconclusive"


def _clean(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def evaluate_canary(config: CanaryConfig, baseline: WindowProfile, canary: WindowProfile, *,
                    duration_s: float, info_metrics: Sequence[str] = ("score_auc",)) -> CanaryResult:
    """Judge ``canary`` against ``baseline`` (each the merge of the arm's windows over the same period)."""
    guarded = {g.metric: g for g in config.guardrails}
    alpha_g = config.alpha / max(len(config.guardrails), 1)
    rows = {"baseline": baseline.rows, "canary": canary.rows}
    enough_to_rollback = min(rows.values()) >= config.min_rows_rollback
    comparisons: list[dict[str, Any]] = []
    reasons: list[str] = []
    regressions: list[str] = []
    unproven: list[str] = []
    for metric in [*guarded, *[m for m in info_metrics if m not in guarded]]:
        g = guarded.get(metric)
        est = _estimate(metric, config, baseline, canary)
        item: dict[str, Any] = {"metric": metric, "guardrail": g.as_dict() if g else None}
        if est is None or not enough_to_rollback:
            item.update(baseline=None, canary=None, effect=None, ci=[None, None], p_value=None,
                        status="insufficient_data")
            comparisons.append(item)
            if g and g.blocks_promotion:
                unproven.append(metric)
            continue
        vb, vc, effect, interval = est
        lo, hi = interval(alpha_g if g else config.alpha)
        p_value = always_valid_p_value(lambda a, iv=interval: (lambda r: r[0] > 0 or r[1] < 0)(iv(a)))
        status = _judge(g, lo, hi) if g else "info"
        item.update(baseline=_clean(vb), canary=_clean(vc), effect=_clean(effect), ci=[_clean(lo), _clean(hi)],
                    p_value=p_value, status=status)
        comparisons.append(item)
        if status == "regression" and g is not None:
            unit = "%" if g.relative else ""
            scale = 100.0 if g.relative else 1.0
            regressions.append(metric)
            reasons.append(
                f"{metric} regressed: effect {effect * scale:+.3g}{unit}, always-valid CI "
                f"[{lo * scale:+.3g}{unit}, {hi * scale:+.3g}{unit}] beyond tolerance {g.tolerance * scale:.3g}{unit}"
            )
        elif g is not None and g.blocks_promotion and status != "ok":
            unproven.append(metric)
    ready = min(rows.values()) >= config.min_rows and duration_s >= config.min_duration_seconds
    if regressions:
        verdict = "rollback"
    elif ready and not unproven:
        verdict = "promote"
        reasons.append(f"all {sum(g.blocks_promotion for g in config.guardrails)} promotion guardrails are within "
                       f"tolerance with confidence after {rows['canary']:,} canary rows and {duration_s:.0f} s")
    else:
        verdict = "continue"
        if min(rows.values()) < config.min_rows:
            reasons.append(f"waiting for {config.min_rows:,} rows per arm "
                           f"(baseline {rows['baseline']:,}, canary {rows['canary']:,})")
        if duration_s < config.min_duration_seconds:
            reasons.append(f"waiting for {config.min_duration_seconds:.0f} s of traffic ({duration_s:.0f} s so far)")
        if unproven:
            reasons.append("not yet shown within tolerance: " + ", ".join(unproven))
    return CanaryResult(verdict, tuple(reasons), rows, tuple(comparisons), duration_s, config)
