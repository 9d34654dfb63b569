"""The paired shadow statistics against exact computations on seeded data (pure core, no I/O)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftline.errors import WireFormatError
from driftline.pairing import SHADOW_KEYS, PairedSummary
from driftline.profile import RuntimeStats, StreamKey, WindowProfile
from driftline.stats.sequential import mean_cs_half_width
from driftline.stats.shadow import ShadowConfig, evaluate_shadow
from driftline.wire import Envelope, decode_envelope, encode_envelope


def folded(rng: np.random.Generator, requests: int = 300, rows: int = 4, flip: float = 0.05,
           noise: float = 0.1, bias: float = 0.0, live_fail: float = 0.02, shadow_fail: float = 0.05):
    """A summary and the exact per-row / per-request data it was folded from."""
    s = PairedSummary()
    diffs, agree, errs = [], [], []
    for _ in range(requests):
        le, se = bool(rng.random() < live_fail), bool(rng.random() < shadow_fail)
        s.add_request(le, se)
        errs.append(int(se) - int(le))
        if le or se:
            continue
        labels = rng.integers(0, 3, rows).tolist()
        other = [(v + 1) % 3 if rng.random() < flip else v for v in labels]
        d = rng.normal(bias, noise, rows)
        s.add_rows(rows, labels, other, d.tolist())
        diffs.extend(d.tolist())
        agree.extend(a == b for a, b in zip(labels, other, strict=True))
    return s, np.asarray(diffs), np.asarray(agree), np.asarray(errs)


def test_summary_counts_and_moments_are_exact() -> None:
    s, diffs, agree, errs = folded(np.random.default_rng(1))
    assert s.score_n == diffs.size == s.rows == s.labelled
    assert s.agree == int(agree.sum())
    assert s.shadow_only_errors - s.live_only_errors == int(errs.sum())
    assert s.requests == errs.size
    assert math.isclose(s.score_mean, float(diffs.mean()), rel_tol=1e-12)
    assert math.isclose(s.score_variance, float(diffs.var(ddof=1)), rel_tol=1e-10)


def test_merge_is_exact_associative_and_commutative() -> None:
    rng = np.random.default_rng(2)
    parts = [folded(rng, requests=int(rng.integers(1, 80)))[0] for _ in range(7)]
    whole = PairedSummary.merged(parts)
    backwards = PairedSummary.merged(reversed(parts))
    nested = PairedSummary.merged([PairedSummary.merged(parts[:3]), PairedSummary.merged(parts[3:])])
    for other in (backwards, nested):
        for key in SHADOW_KEYS:
            assert math.isclose(getattr(whole, key), getattr(other, key), rel_tol=1e-9, abs_tol=1e-12), key
    assert whole.requests == sum(p.requests for p in parts)
    assert PairedSummary.merged([PairedSummary(), whole]).to_dict() == whole.to_dict()


def test_wire_round_trip_and_bounds() -> None:
    s, *_ = folded(np.random.default_rng(3), requests=20)
    p = WindowProfile(StreamKey.of("m", "2", "shadow"), 0.0, 60.0)
    p.update({"x": [1.0, 2.0]})
    p.shadow = s.to_dict()
    back = decode_envelope(encode_envelope(Envelope([p]))).profiles[0]
    assert back.shadow == s.to_dict()
    assert p.merge(p).shadow == PairedSummary.merged([s, s]).to_dict()  # windows merge their pairs
    plain = WindowProfile(StreamKey.of("m", "1"), 0.0, 60.0)
    assert plain.merge(p).shadow == s.to_dict() and p.merge(plain).shadow == s.to_dict()
    for bad, why in (({"agree": s.labelled + 1}, "exceeds labelled"), ({"requests": -1}, "outside"),
                     ({"score_mean": float("nan")}, "not finite"), ({"rows": "7"}, "expected an integer"),
                     ({"score_m2": -1.0}, "negative"), ({"shadow_errors": s.requests + 1}, "exceeds requests")):
        q = p.copy()
        q.shadow = {**s.to_dict(), **bad}
        with pytest.raises(WireFormatError, match=why):
            decode_envelope(encode_envelope(Envelope([q])))
    q = p.copy()
    q.shadow = {**s.to_dict(), "future_key": 1}
    assert "future_key" not in decode_envelope(encode_envelope(Envelope([q]))).profiles[0].shadow  # dropped


def test_intervals_are_the_confidence_sequences_computed_by_hand() -> None:
    s, diffs, agree, errs = folded(np.random.default_rng(4), requests=2000)
    cfg = ShadowConfig(t_star=500.0)
    r = evaluate_shadow(s, cfg)
    a = cfg.alpha / 3  # three tested comparisons (no latency tolerance)
    n = agree.size
    p = 1 - agree.mean()
    h = mean_cs_half_width(n, max(p * (1 - p), 1 / n), a, cfg.t_star)
    c = r.comparison("disagreement")
    assert c is not None and math.isclose(c["effect"], p) and np.allclose(c["ci"], (p - h, p + h))
    h = mean_cs_half_width(diffs.size, diffs.var(ddof=1), a, cfg.t_star)
    c = r.comparison("score_diff")
    assert c is not None and np.allclose(c["ci"], (diffs.mean() - h, diffs.mean() + h), rtol=1e-9)
    m, var = errs.mean(), (errs != 0).mean() - errs.mean() ** 2
    assert math.isclose(var, errs.var(), rel_tol=1e-9, abs_tol=1e-15)
    h = mean_cs_half_width(errs.size, var, a, cfg.t_star)
    c = r.comparison("error_rate_diff")
    assert c is not None and np.allclose(c["ci"], (m - h, m + h), rtol=1e-9)
    assert r.agreement == pytest.approx(agree.mean()) and r.error_ratio["shadow"] == s.shadow_errors / s.requests


def test_verdicts() -> None:
    rng = np.random.default_rng(5)
    same = folded(rng, requests=3000, flip=0.0, noise=0.0, live_fail=0.0, shadow_fail=0.0)[0]
    assert evaluate_shadow(same).verdict == "ready"
    r = evaluate_shadow(folded(rng, requests=400, flip=0.0, noise=0.0, live_fail=0, shadow_fail=0)[0])
    assert r.verdict == "undecided" and "waiting for 500 paired requests" in r.reasons[0]
    flipped = folded(rng, requests=100, flip=1.0, noise=0.0, live_fail=0, shadow_fail=0)[0]
    r = evaluate_shadow(flipped)
    assert r.verdict == "worse" and r.comparison("disagreement")["status"] == "worse"  # type: ignore[index]
    biased = folded(rng, requests=100, flip=0.0, noise=0.05, bias=-0.3, live_fail=0, shadow_fail=0)[0]
    assert evaluate_shadow(biased).comparison("score_diff")["status"] == "worse"  # type: ignore[index]
    tiny = folded(rng, requests=5, flip=1.0, noise=0.0, live_fail=0, shadow_fail=0)[0]
    assert evaluate_shadow(tiny, ShadowConfig(min_rows_worse=50)).verdict != "worse"  # 20 rows: too few
    failing = PairedSummary()
    for _ in range(600):
        failing.add_request(False, True)
    r = evaluate_shadow(failing)
    assert r.verdict == "worse" and [c["metric"] for c in r.comparisons] == ["error_rate_diff"]


def test_latency_is_reported_and_tested_only_when_asked() -> None:
    rng = np.random.default_rng(6)
    s = folded(rng, requests=3000, flip=0.0, noise=0.0, live_fail=0.0, shadow_fail=0.0)[0]
    live, slow = RuntimeStats(), RuntimeStats()
    live.update(latency_ms=rng.gamma(4, 1.0, 3000))
    slow.update(latency_ms=rng.gamma(4, 1.0, 3000) * 3)
    r = evaluate_shadow(s, live_runtime=live, shadow_runtime=slow)
    assert r.verdict == "ready" and r.comparison("latency_p99") is None
    assert r.latency_p99_seconds["shadow"] > 2.5 * r.latency_p99_seconds["live"]  # type: ignore[operator]
    r = evaluate_shadow(s, ShadowConfig(latency_p99_tolerance=0.2), live_runtime=live, shadow_runtime=slow)
    assert r.verdict == "worse" and r.comparison("latency_p99")["status"] == "worse"  # type: ignore[index]


def test_peeking_after_every_window_rarely_calls_a_good_shadow_worse() -> None:
    """Always valid: a shadow inside every tolerance, judged after each of 30 windows, 60 times over."""
    rng = np.random.default_rng(7)
    cfg = ShadowConfig(max_disagreement=0.02, score_tolerance=0.02, error_tolerance=0.01)
    false_worse = 0
    for _ in range(60):
        s = PairedSummary()
        called = False
        for _ in range(30):
            for _ in range(20):
                se = bool(rng.random() < 0.01)
                s.add_request(False, se)
                if not se:
                    labels = [0, 1, 2, 3]
                    other = [v if rng.random() > 0.015 else -1 for v in labels]  # 1.5% < 2% disagree
                    s.add_rows(4, labels, other, rng.normal(0.015, 0.2, 4).tolist())  # bias 0.015 < 0.02
            called = called or evaluate_shadow(s, cfg).verdict == "worse"
        false_worse += called
    assert false_worse <= 3  # 5% of 60; a fixed-n test checked 30 times would exceed it
