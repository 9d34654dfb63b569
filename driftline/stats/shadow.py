"""Is a shadow model ready to promote? Paired, always-valid comparisons with the live model.

Input: a :class:`~driftline.pairing.PairedSummary` (the sidecar paired both answers to the same
mirrored requests) and, optionally, each side's :class:`~driftline.profile.RuntimeStats` for latency.
Every comparison is an always-valid confidence sequence (:mod:`.sequential`), so the verdict may be
recomputed after every window without inflating false calls:

* ``disagreement``: the share of paired rows whose predicted labels differ, a Bernoulli mean
  ``p = 1 - agree / labelled`` with half width ``mean_cs_half_width(labelled, max(p (1 - p), 1 / n))``;
* ``score_diff``: the mean of the paired differences ``d = shadow score - live score``, half width
  ``mean_cs_half_width(score_n, var(d))``; pairing removes the between-request variance, so it
  needs far fewer rows than the two-sample canary test of ``score_mean``;
* ``error_rate_diff``: the paired difference of error rates per request,
  ``(shadow_only_errors - live_only_errors) / requests``, a mean of values in ``{-1, 0, 1}`` with
  variance ``(shadow_only + live_only) / requests - diff^2`` (McNemar's cells);
* ``latency_p99`` (only with ``latency_p99_tolerance``): the canary's relative p99 comparison of the
  two sides' latency sketches (time-uniform DKW bounds on both quantiles).

With ``g`` tested metrics each is tested at ``alpha / g``. Verdict: ``worse`` as soon as one interval
lies entirely beyond its tolerance in the bad direction (after ``min_rows_worse`` rows or requests);
``ready`` once ``min_pairs`` requests were compared and every tested interval lies entirely within
its tolerance; else ``undecided``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as typed_dataclass

from ..errors import CanaryConfigError
from ..pairing import PairedSummary
from .canary import _latency
from .sequential import always_valid_p_value, mean_cs_half_width

__all__ = ["SHADOW_METRICS", "SHADOW_VERDICTS", "ShadowConfig", "ShadowResult", "evaluate_shadow"]

SHADOW_VERDICTS = ("ready", "worse", "undecided")
SHADOW_METRICS = ("disagreement", "score_diff", "error_rate_diff", "latency_p99")


@typed_dataclass(frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False))
class ShadowConfig:
    """Tolerances and sample sizes of the shadow comparison (the service's ``shadow:`` settings).

    ``max_disagreement``: largest acceptable share of rows whose labels differ; ``score_tolerance``:
    largest acceptable |mean score difference|; ``error_tolerance``: largest acceptable increase of
    the error rate (absolute); ``latency_p99_tolerance``: largest acceptable relative increase of the
    p99 latency (``None``: reported, not tested, since a shadow often runs on other hardware).
    """

    alpha: float = 0.05
    max_disagreement: float = Field(0.02, ge=0, le=1)
    score_tolerance: float = Field(0.05, ge=0)
    error_tolerance: float = Field(0.01, ge=0, le=1)
    latency_p99_tolerance: float | None = Field(None, ge=0)
    min_pairs: int = Field(500, ge=1)
    min_rows_worse: int = Field(50, ge=1)
    t_star: float = Field(1000.0, gt=0)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise CanaryConfigError("alpha must be in (0, 1)")


@dataclass(frozen=True)
class ShadowResult:
    """The verdict, why, and each comparison with its always-valid interval (an immutable value)."""

    verdict: str
    reasons: tuple[str, ...]
    summary: Mapping[str, Any]
    comparisons: tuple[Mapping[str, Any], ...]
    agreement: float | None
    score_diff_mean: float | None
    error_ratio: Mapping[str, float | None]
    latency_p99_seconds: Mapping[str, float | None]

    def comparison(self, metric: str) -> Mapping[str, Any] | None:
        return next((c for c in self.comparisons if c["metric"] == metric), None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (fresh containers)."""
        return {"verdict": self.verdict, "reasons": list(self.reasons), "summary": dict(self.summary),
                "agreement": self.agreement, "score_diff_mean": self.score_diff_mean,
                "error_ratio": dict(self.error_ratio), "latency_p99_seconds": dict(self.latency_p99_seconds),
                "comparisons": [{**c, "ci": list(c["ci"])} for c in self.comparisons]}


def _rate_interval(hits: float, n: float, t_star: float):
    p = hits / n

    def interval(a: float) -> tuple[float, float]:
        h = mean_cs_half_width(n, max(p * (1 - p), 1.0 / n), a, t_star)
        return p - h, p + h

    return p, interval


def _mean_interval(mean: float, variance: float, n: float, t_star: float):
    def interval(a: float) -> tuple[float, float]:
        h = mean_cs_half_width(n, max(variance, 1.0 / n), a, t_star)
        return mean - h, mean + h

    return mean, interval


def _estimates(s: PairedSummary, cfg: ShadowConfig, live_rt: Any, shadow_rt: Any) -> dict[str, Any]:
    """metric -> (effect, interval, tolerance, two_sided, n, min for worse); only metrics with data."""
    out: dict[str, Any] = {}
    if s.labelled:
        p, iv = _rate_interval(s.labelled - s.agree, s.labelled, cfg.t_star)
        out["disagreement"] = (p, iv, cfg.max_disagreement, False, s.labelled)
    if s.score_n:
        m, iv = _mean_interval(s.score_mean, s.score_variance, s.score_n, cfg.t_star)
        out["score_diff"] = (m, iv, cfg.score_tolerance, True, s.score_n)
    if s.requests:
        n = s.requests
        diff = (s.shadow_only_errors - s.live_only_errors) / n
        var = (s.shadow_only_errors + s.live_only_errors) / n - diff * diff
        m, iv = _mean_interval(diff, var, n, cfg.t_star)
        out["error_rate_diff"] = (m, iv, cfg.error_tolerance, False, n)
    if (cfg.latency_p99_tolerance is not None and live_rt is not None and shadow_rt is not None
            and not live_rt.latency_ms.is_empty() and not shadow_rt.latency_ms.is_empty()):
        _, _, effect, iv = _latency(live_rt, shadow_rt, 0.99)
        out["latency_p99"] = (effect, iv, cfg.latency_p99_tolerance, False, min(live_rt.latency_ms.n,
                                                                                 shadow_rt.latency_ms.n))
    return out


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _p99_seconds(rt: Any) -> float | None:
    if rt is None or rt.latency_ms.is_empty():
        return None
    return _finite(float(rt.latency_ms.get_quantile(0.99)) / 1000.0)


def evaluate_shadow(summary: PairedSummary, config: ShadowConfig | None = None, *, live_runtime: Any = None,
                    shadow_runtime: Any = None) -> ShadowResult:
    """Judge the shadow against live from their paired summary (and optional runtime stats)."""
    cfg = config or ShadowConfig()
    s = summary
    est = _estimates(s, cfg, live_runtime, shadow_runtime)
    alpha_g = cfg.alpha / max(len(est), 1)
    comparisons: list[dict[str, Any]] = []
    reasons: list[str] = []
    worse: list[str] = []
    unproven: list[str] = []
    for metric, (effect, interval, tol, two_sided, n) in est.items():
        lo, hi = interval(alpha_g)
        p_value = always_valid_p_value(lambda a, iv=interval: (lambda r: r[0] > 0 or r[1] < 0)(iv(a)))
        bad = lo > tol or (two_sided and hi < -tol)
        ok = hi <= tol and (not two_sided or lo >= -tol)
        status = "worse" if bad and n >= cfg.min_rows_worse else "ok" if ok else "inconclusive"
        comparisons.append({"metric": metric, "effect": _finite(effect), "ci": (_finite(lo), _finite(hi)),
                            "tolerance": tol, "n": int(n), "p_value": p_value, "status": status})
        if status == "worse":
            worse.append(metric)
            reasons.append(f"{metric}: effect {effect:+.3g}, always-valid CI [{lo:+.3g}, {hi:+.3g}] "
                           f"beyond tolerance {tol:.3g}")
        elif status != "ok":
            unproven.append(metric)
    if worse:
        verdict = "worse"
    elif s.requests >= cfg.min_pairs and not unproven and ("disagreement" in est or "score_diff" in est):
        verdict = "ready"
        reasons.append(f"all {len(est)} comparisons within tolerance with confidence after "
                       f"{s.requests:,} paired requests ({s.rows:,} rows)")
    else:
        verdict = "undecided"
        if s.requests < cfg.min_pairs:
            reasons.append(f"waiting for {cfg.min_pairs:,} paired requests ({s.requests:,} so far)")
        if not ("disagreement" in est or "score_diff" in est):
            reasons.append("no paired outputs to compare (no labels or scores on both sides)")
        if unproven:
            reasons.append("not yet shown within tolerance: " + ", ".join(unproven))
    req = s.requests
    return ShadowResult(
        verdict, tuple(reasons), s.to_dict(), tuple(comparisons),
        agreement=(s.agree / s.labelled) if s.labelled else None,
        score_diff_mean=s.score_mean if s.score_n else None,
        error_ratio={"live": s.live_errors / req if req else None, "shadow": s.shadow_errors / req if req else None},
        latency_p99_seconds={"live": _p99_seconds(live_runtime), "shadow": _p99_seconds(shadow_runtime)},
    )
