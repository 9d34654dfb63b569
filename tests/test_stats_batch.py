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
from driftline.stats import DriftConfig, compare_profiles, numeric, numeric_scores, sketch_cdf
from driftline.stats.distributions import ks_p_value
from driftline.stats.divergence import hellinger, jensen_shannon, psi
from driftline.stats.memo import BytesMemo
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


# ---- the reference memo: each reference sketch's sorted entries, edges and quantiles kept per sketch ----


def _profile(rng: np.random.Generator, n: int, k: int) -> WindowProfile:
    """A mixed profile: every shape of ``_draw``, signed zeros, all-missing, one value, all equal,
    a column only some profiles have, categorical features and a numeric output."""
    cols: dict[str, np.ndarray] = {f"c{i}": _draw(rng, n) for i in range(14)}
    cols["zeros"] = np.where(rng.random(n) < 0.5, -0.0, 0.0)
    cols["nan"] = np.where(rng.random(n) < 0.6, np.nan, rng.normal(size=n))
    cols["all_nan"] = np.full(n, np.nan)
    cols["one"] = np.where(np.arange(n) == 0, 2.5, np.nan)
    cols["equal"] = np.full(n, -1.25)
    if rng.random() < 0.5:
        cols["sometimes"] = rng.normal(size=n)
    cols["cat"] = rng.choice(["a", "b", "c"], size=n)
    prof = WindowProfile(StreamKey.of("m", "v"), 0, 1, ProfileConfig(kll_k=k))
    return prof.update(cols, outputs={"score": rng.random(n)})


def _report(pr: WindowProfile, pc: WindowProfile, bins: int) -> str:
    """Every number of a report, exactly (repr keeps every bit, signed zeros and NaN included)."""
    rep = compare_profiles(pr, pc, DriftConfig(bins=bins, min_rows=1))
    return repr([rep.to_dict(), [(f.name, dict(f.scores), f.effect, f.raw_p_value)
                                 for f in rep.features + rep.outputs]])


def _no_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(numeric, "REFERENCE_STEPS", BytesMemo(0, lambda key, value: 1))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_reports_are_the_same_with_the_reference_memo_cold_warm_and_off(seed: int,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(100 + seed)
    k = int(rng.choice([8, 50, 400]))
    pr, pc = _profile(rng, int(rng.integers(1, 6000)), k), _profile(rng, int(rng.integers(1, 6000)), k)
    if seed % 2:
        pr.merge(_profile(rng, int(rng.integers(1, 6000)), k))  # merged: often an empty level 0
    bins = (10, 3, 7, 10)[seed]
    numeric.REFERENCE_STEPS.clear()
    cold = _report(pr, pc, bins)
    assert len(numeric.REFERENCE_STEPS) > 0
    warm = _report(pr, pc, bins)
    again = _report(WindowProfile.from_dict(pr.to_dict()), pc, bins)  # a fresh object with the same sketches
    with monkeypatch.context() as m:
        _no_memo(m)
        off = _report(pr, pc, bins)
        assert len(numeric.REFERENCE_STEPS) == 0
    assert cold == warm == again == off


def test_memo_entries_follow_the_sketch_not_the_object() -> None:
    rng = np.random.default_rng(9)
    ref, cur = column(rng.normal(size=5000)), column(rng.normal(size=3000))
    numeric.REFERENCE_STEPS.clear()
    before = numeric_scores_many([(ref, cur)])[0]
    ref.update_array(rng.normal(loc=2.0, size=5000))  # the same object, other values: another sketch
    after = numeric_scores_many([(ref, cur)])[0]
    fresh = numeric_scores_many([(ref, cur)], cache=False)[0]
    assert after.as_dict() == fresh.as_dict() != before.as_dict()
    assert after.effects == fresh.effects and after.outside == fresh.outside


@pytest.mark.parametrize("seed", [0, 1])
def test_many_pairs_cold_warm_and_uncached_are_equal_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(60):
        k = int(rng.choice([8, 50, 400]))
        a, b = column(_draw(rng, int(rng.integers(1, 8000))), k), column(_draw(rng, int(rng.integers(1, 8000))), k)
        pairs.append((a, b))
    pairs.append(pairs[0])  # one reference sketch twice in one batch
    numeric.REFERENCE_STEPS.clear()
    runs = [numeric_scores_many(pairs, bins=7), numeric_scores_many(pairs, bins=7),
            numeric_scores_many(pairs, bins=7, cache=False)]
    for got in runs[1:]:
        assert [repr(s) for s in got] == [repr(s) for s in runs[0]]
    # other bins, other entries: a memo keyed on the sketch alone would hand back the edges of 7 bins
    three = [numeric_scores_many(pairs, bins=3), numeric_scores_many(pairs, bins=3, cache=False)]
    assert [repr(s) for s in three[0]] == [repr(s) for s in three[1]] != [repr(s) for s in runs[0]]


def test_outside_shares_are_the_sketch_queries() -> None:
    rng = np.random.default_rng(4)
    for i in range(30):
        k = int(rng.choice([8, 50, 400]))
        draw = (rng.normal, lambda size: rng.integers(0, 4, size=size).astype(np.float64))[i % 2]
        a, b = column(draw(size=int(rng.integers(2, 6000))), k), column(draw(size=int(rng.integers(1, 6000))) + i % 3, k)
        pts = np.array([a.min, a.max])
        want = (float(b.kll.get_cdf(pts[:1], inclusive=False)[0]),
                1.0 - float(b.kll.get_cdf(pts[1:], inclusive=True)[0]))
        assert numeric_scores_many([(a, b)])[0].outside == want


def test_bytes_memo_keeps_the_newest_within_its_budget() -> None:
    memo: BytesMemo[str] = BytesMemo(10, lambda key, value: len(value))
    memo.put("a", "xxxx")
    memo.put("b", "xxxx")
    assert memo.get("a") == "xxxx"  # now the most recent
    memo.put("c", "xxxx")  # 12 > 10: the least recently used ("b") goes
    assert memo.get("b") is None and memo.get("a") == "xxxx" and memo.get("c") == "xxxx"
    memo.put("big", "x" * 11)  # larger than the whole budget: not kept, nothing dropped for it
    assert memo.get("big") is None and len(memo) == 2 and memo.nbytes == 8
    memo.clear()
    assert len(memo) == 0 and memo.nbytes == 0
