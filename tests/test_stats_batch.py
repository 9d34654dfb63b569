"""The batched numeric scores (all of a report's numeric columns at once) against the one-column-at-a-time
definition: KS, its p-value and the quantile shifts bit for bit, the rest to summation order.

``reference_scores`` is the straightforward per-column computation on two :class:`SketchCDF`
objects, written with their own methods; the batch must give its results for pairs of any mix of
sizes, ties, point masses, constant and one-item sketches, scored together in one chunk.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftline.columns import NumericColumn
from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.stats import compare_profiles, numeric_scores, sketch_cdf
from driftline.stats.distributions import ks_p_value
from driftline.stats.divergence import hellinger, jensen_shannon, psi
from driftline.stats.numeric import (
    EDGE_SNAP,
    QUANTILE_RANKS,
    RMS_PER_BOUND,
    SketchCDF,
    numeric_scores_many,
    reference_scale,
)
from driftline.stats.stepcdf import searchsorted_rows


def column(values: np.ndarray, k: int = 400) -> NumericColumn:
    col = WindowProfile(StreamKey.of("m", "v"), 0, 1, ProfileConfig(kll_k=k)).update({"x": values}).features["x"]
    assert isinstance(col, NumericColumn)
    return col


def reference_edges(ref: SketchCDF, bins: int) -> np.ndarray:
    targets = np.arange(1, bins) / bins
    tops = ref.cum / ref.n
    right = np.clip(np.searchsorted(tops, targets, side="left"), 0, tops.size - 1)
    left = np.clip(right - 1, 0, tops.size - 1)
    nearest = np.where(np.abs(tops[left] - targets) <= np.abs(tops[right] - targets), left, right)
    close = np.abs(tops[nearest] - targets) <= EDGE_SNAP
    edges = np.unique(np.where(close, ref.items[nearest], ref.quantiles(targets)))
    kept, last = [], 0.0
    for edge, top in zip(edges.tolist(), ref.cdf(edges).tolist(), strict=True):
        if top - last >= EDGE_SNAP and 1.0 - top >= EDGE_SNAP:
            kept.append(edge)
            last = top
    return np.array(kept, dtype=np.float64)


def _binned(p_cum: np.ndarray, q_cum: np.ndarray) -> tuple[float, float, float]:
    p = np.clip(np.diff(np.concatenate(([0.0], p_cum, [1.0]))), 0.0, 1.0)
    q = np.clip(np.diff(np.concatenate(([0.0], q_cum, [1.0]))), 0.0, 1.0)
    p, q = p / p.sum(), q / q.sum()
    return psi(p, q), jensen_shannon(p, q), hellinger(p, q)


def _shrink(g: np.ndarray, eps: float) -> np.ndarray:
    return np.sign(g) * np.sqrt(np.maximum(g * g - eps * eps, 0.0))


def reference_scores(a: NumericColumn, b: NumericColumn, bins: int) -> dict[str, float]:
    ref, cur = sketch_cdf(a), sketch_cdf(b)
    var = (a.sumsq - a.sum * a.sum / a.count) / a.count
    scale = reference_scale(var, a.mean, ref)
    eps = ref.rank_error + cur.rank_error
    rms = math.hypot(ref.rank_error, cur.rank_error) * RMS_PER_BOUND
    x = np.union1d(ref.items, cur.items)
    gap = cur.cdf(x) - ref.cdf(x)
    ks = float(np.max(np.abs(gap)))
    g = _shrink(gap[:-1], rms) if rms > 0 else gap[:-1]
    w1 = max(float(np.dot(np.abs(g), np.diff(x))), abs(b.mean - a.mean)) / scale
    edges = reference_edges(ref, bins)
    p_cum, q_cum = ref.cdf(edges), cur.cdf(edges)
    psi_v, js_v, hel_v = _binned(p_cum, q_cum)
    psi_e, js_e, hel_e = _binned(p_cum, p_cum + _shrink(q_cum - p_cum, rms)) if rms > 0 else (psi_v, js_v, hel_v)
    shifts = (cur.quantiles(QUANTILE_RANKS) - ref.quantiles(QUANTILE_RANKS)) / scale
    out = {"ks": ks, "ks_p_value": ks_p_value(max(ks - eps, 0.0), ref.n, cur.n), "psi": psi_v,
           "jensen_shannon": js_v, "hellinger": hel_v, "wasserstein": w1, "mean_shift": (b.mean - a.mean) / scale,
           "rank_error": eps, "effect_ks": math.sqrt(max(ks * ks - eps * eps, 0.0)),
           "effect_psi": min(psi_e, psi_v), "effect_jensen_shannon": min(js_e, js_v),
           "effect_hellinger": min(hel_e, hel_v), "effect_wasserstein": w1}
    out.update({f"shift_p{round(r * 100)}": float(s) for r, s in zip(QUANTILE_RANKS, shifts, strict=True)})
    return out


def _draw(rng: np.random.Generator, n: int) -> np.ndarray:
    kind = int(rng.integers(0, 7))
    if kind == 0:
        return rng.normal(size=n)
    if kind == 1:
        return rng.integers(0, 5, size=n).astype(np.float64)  # heavy ties, inside and across sketches
    if kind == 2:
        return np.round(rng.lognormal(size=n), 1)
    if kind == 3:
        return np.where(rng.random(n) < 0.7, 0.0, rng.normal(size=n))  # a point mass
    if kind == 4:
        return np.full(n, 3.0)  # constant
    if kind == 5:
        return 1e7 + 1e-3 * rng.normal(size=n)  # the mean dwarfs the spread
    return rng.standard_t(2, size=n)


EXACT = ("ks", "ks_p_value", "mean_shift", "rank_error", "effect_ks", "shift_p5", "shift_p25", "shift_p50",
         "shift_p75", "shift_p95")


@pytest.mark.parametrize("seed", [0, 1])
def test_batch_equals_the_one_column_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for bins in (10, 2, 7):
        pairs = []
        for _ in range(40):
            k = int(rng.choice([8, 50, 400]))
            a, b = column(_draw(rng, int(rng.integers(1, 8000))), k), column(_draw(rng, int(rng.integers(1, 8000))), k)
            if rng.random() < 0.4:  # merged sketches, often with an empty level 0
                a.merge(column(_draw(rng, int(rng.integers(1, 8000))), k))
            pairs.append((a, b))
        for (a, b), got in zip(pairs, numeric_scores_many(pairs, bins=bins), strict=True):
            want = reference_scores(a, b, bins)
            have = {**got.as_dict(), **{f"effect_{m}": v for m, v in got.effects.items()}}
            for key, value in want.items():
                if key in EXACT:
                    assert have[key] == value, key
                else:
                    assert have[key] == pytest.approx(value, rel=1e-12, abs=1e-14), key
            assert got.as_dict() == numeric_scores(a, b, bins=bins).as_dict() or all(
                v == pytest.approx(numeric_scores(a, b, bins=bins).as_dict()[k], rel=1e-12, abs=1e-14)
                for k, v in got.as_dict().items())


def test_searchsorted_rows_is_numpy_searchsorted_per_row() -> None:
    rng = np.random.default_rng(7)
    rows = [np.unique(rng.integers(0, 40, size=int(rng.integers(1, 60))).astype(np.float64)) for _ in range(50)]
    count = np.array([r.size for r in rows])
    start = np.cumsum(count) - count
    flat = np.concatenate(rows)
    queries = rng.integers(-2, 43, size=(50, 9)).astype(np.float64)
    queries[:, 0] = [r[0] for r in rows]  # exactly on an item, and past both ends
    queries[:, 1] = [r[-1] for r in rows]
    for side in ("left", "right"):
        got = searchsorted_rows(flat, start, count, queries, side)
        want = np.array([np.searchsorted(r, q, side=side) for r, q in zip(rows, queries, strict=True)])
        assert np.array_equal(got, want)


def test_report_batches_numeric_columns_with_the_same_results() -> None:
    rng = np.random.default_rng(3)
    ref = {f"c{i}": _draw(rng, 3000) for i in range(12)}
    cur = {f"c{i}": _draw(rng, 2000) for i in range(12)}
    ref["short"] = rng.normal(size=3000)
    cur["short"] = np.where(np.arange(2000) < 5, 1.0, np.nan)  # 5 values, below min_rows: not scored
    pr = WindowProfile(StreamKey.of("m", "v"), 0, 1).update(ref)
    pc = WindowProfile(StreamKey.of("m", "v"), 0, 1).update(cur)
    report = compare_profiles(pr, pc)
    for item in report.features:
        if item.name == "short":
            assert item.status == "insufficient_data" and item.scores == {}
            continue
        a, b = pr.features[item.name], pc.features[item.name]
        assert isinstance(a, NumericColumn) and isinstance(b, NumericColumn)
        alone = numeric_scores(a, b).as_dict()
        assert item.scores.keys() == alone.keys()
        assert all(item.scores[k] == pytest.approx(v, rel=1e-12, abs=1e-14) for k, v in alone.items())
