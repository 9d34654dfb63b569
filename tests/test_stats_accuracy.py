"""Numeric scores from sketches against exact computations on the raw data (scipy, numpy, Evidently).

The bounds asserted here are the ones documented in docs/statistics.md, at default settings (KLL
k=400, 10 reference-quantile bins) and at k=200. KLL compaction is randomised, so every run draws
new sketch errors; the bounds leave room for that (bench/bench_stats_accuracy.py measures the worst
over thousands of draws).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from driftline.columns import DEFAULT_KLL_K
from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.stats import SketchCDF, exact_numeric_scores, numeric_scores, sketch_cdf
from driftline.stats.distributions import chi2_sf, kolmogorov_sf, ks_p_value, norm_ppf, norm_sf
from driftline.stats.divergence import hellinger, jensen_shannon, psi
from tests.stats_cases import DISTRIBUTIONS, make_pair

# |sketch - exact| <= absolute + relative * exact, per KLL k
BOUNDS = {
    400: {"ks": (0.02, 0.0), "psi": (0.02, 0.3), "jensen_shannon": (0.03, 0.0), "hellinger": (0.03, 0.0),
          "wasserstein": (0.08, 0.2)},
    200: {"ks": (0.03, 0.0), "psi": (0.1, 0.3), "jensen_shannon": (0.05, 0.0), "hellinger": (0.05, 0.0),
          "wasserstein": (0.15, 0.2)},
}
SIZES = ((20_000, 20_000), (200_000, 5_000))


def column(values: np.ndarray, k: int = DEFAULT_KLL_K):  # -> NumericColumn
    return WindowProfile(StreamKey.of("m", "v"), 0, 1, ProfileConfig(kll_k=k)).update({"x": values}).features["x"]


def finite(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x)]


def test_default_is_what_the_bounds_are_documented_for() -> None:
    assert ProfileConfig().kll_k == DEFAULT_KLL_K == 400


@pytest.mark.parametrize("k", [400, 200])
@pytest.mark.parametrize("dist", sorted(DISTRIBUTIONS))
def test_numeric_scores_within_documented_bounds(dist: str, k: int) -> None:
    for n_ref, n_cur in SIZES:
        for shift in (0.0, 0.1, 0.5):
            ref, cur = make_pair(dist, shift, seed=int(shift * 10) + n_cur, n_ref=n_ref, n_cur=n_cur)
            s = numeric_scores(column(ref, k), column(cur, k))
            fr, fc = finite(ref), finite(cur)
            exact = exact_numeric_scores(fr, fc)
            for method, (absolute, relative) in BOUNDS[k].items():
                err = abs(s.as_dict()[method] - exact[method])
                assert err <= absolute + relative * exact[method], (method, shift, n_ref, s.as_dict()[method], exact)
            # effects are the scores less the sketches' noise: never above the score, and as close to the
            # exact value as the score itself (a real change never shrinks out of sight)
            for method, (absolute, relative) in BOUNDS[k].items():
                assert s.effects[method] <= s.as_dict()[method] + 1e-12
                err = abs(s.effects[method] - exact[method])
                assert err <= absolute + relative * exact[method], ("effect", method, shift, n_ref, s.effects, exact)


def snapped_quantile_edges(ref: np.ndarray, bins: int, snap: float = 0.02) -> np.ndarray:
    """The documented bin edges, written independently: numpy's inverted-CDF quantiles, except that an
    edge whose target rank lies within ``snap`` of the top of a value's CDF step becomes that value, and
    no bin keeps less than ``snap`` of the reference."""
    values, counts = np.unique(ref, return_counts=True)
    tops = np.cumsum(counts) / ref.size
    edges = []
    for t in np.arange(1, bins) / bins:
        i = int(np.argmin(np.abs(tops - t)))
        edges.append(values[i] if abs(tops[i] - t) <= snap else np.quantile(ref, t, method="inverted_cdf"))
    kept, last = [], 0.0
    for e in np.unique(edges):
        top = np.mean(ref <= e)
        if top - last >= snap and 1 - top >= snap:
            kept.append(e)
            last = top
    return np.array(kept)


def test_exact_scores_are_scipys_on_the_raw_data() -> None:
    """"Exact" means: KS is ks_2samp's statistic, Wasserstein is scipy's divided by the reference std."""
    for dist in ("normal", "lognormal", "heavy_ties", "small_integer", "normal_scale"):
        ref, cur = make_pair(dist, 0.5, 3, 30_000, 10_000)
        exact = exact_numeric_scores(ref, cur)
        assert exact["ks"] == pytest.approx(stats.ks_2samp(ref, cur).statistic, abs=1e-12)
        assert exact["wasserstein"] == pytest.approx(stats.wasserstein_distance(ref, cur) / np.std(ref), rel=1e-9)
        edges = snapped_quantile_edges(ref, 10)
        p = np.diff(np.concatenate(([0], np.searchsorted(np.sort(ref), np.unique(edges), "right"), [ref.size])))
        q = np.diff(np.concatenate(([0], np.searchsorted(np.sort(cur), np.unique(edges), "right"), [cur.size])))
        assert exact["psi"] == pytest.approx(psi(p / ref.size, q / cur.size), rel=1e-9)


def test_ks_within_002_of_scipy_at_realistic_sizes() -> None:
    """The issue's headline: default settings, sketch KS within 0.02 of ks_2samp on the raw data."""
    rng = np.random.default_rng(11)
    worst = 0.0
    for n_ref, n_cur in ((1_000_000, 1_000_000), (1_000_000, 2_000), (5_000, 300_000)):
        ref = rng.lognormal(0, 1, n_ref)
        cur = rng.lognormal(0.05, 1.1, n_cur)
        d_sketch = numeric_scores(column(ref), column(cur)).ks
        d_scipy = stats.ks_2samp(ref, cur).statistic
        worst = max(worst, abs(d_sketch - d_scipy))
    assert worst <= 0.02


FLOAT32 = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(st.lists(FLOAT32, min_size=1, max_size=300), st.lists(FLOAT32, min_size=1, max_size=300))
def test_exact_mode_sketches_give_the_exact_scores(a: list[float], b: list[float]) -> None:
    """Below k values a sketch holds every value: no rank error, and every score equals the exact one."""
    ra, rb = np.array(a, dtype=np.float64), np.array(b, dtype=np.float64)
    s = numeric_scores(column(ra), column(rb))
    assert s.rank_error == 0.0
    exact = exact_numeric_scores(ra, rb)
    for method in ("ks", "psi", "jensen_shannon", "hellinger", "wasserstein", "mean_shift"):
        assert s.as_dict()[method] == pytest.approx(exact[method], rel=1e-6, abs=1e-9), method
    assert s.effects["ks"] == s.ks


@settings(max_examples=40, deadline=None)
@given(st.lists(FLOAT32, min_size=1, max_size=2000))
def test_identical_columns_score_zero(a: list[float]) -> None:
    col = column(np.array(a))
    s = numeric_scores(col, col.copy())
    for method in ("ks", "psi", "jensen_shannon", "hellinger", "wasserstein", "mean_shift"):
        assert s.as_dict()[method] == pytest.approx(0.0, abs=1e-9)
    assert s.ks_p_value == 1.0


def _plain_std(x: list[float]) -> float | None:
    v = np.asarray(x, dtype=np.float64)
    var = float(np.var(v))
    return float(np.sqrt(var)) if var > 0 and v.mean() ** 2 / var < 1e8 else None


@settings(max_examples=40, deadline=None)
@given(st.lists(FLOAT32, min_size=2, max_size=600), st.lists(FLOAT32, min_size=2, max_size=600))
def test_symmetries_and_ranges(a: list[float], b: list[float]) -> None:
    ca, cb = column(np.array(a)), column(np.array(b))
    ab, ba = numeric_scores(ca, cb), numeric_scores(cb, ca)
    assert ab.ks == pytest.approx(ba.ks, abs=1e-12)
    assert ab.ks_p_value == pytest.approx(ba.ks_p_value, abs=1e-12)
    sa, sb = _plain_std(a), _plain_std(b)
    if sa is not None and sb is not None:  # W1 is symmetric before it is divided by the reference's scale
        assert ab.wasserstein * sa == pytest.approx(ba.wasserstein * sb, rel=1e-6, abs=1e-6)
    for s in (ab, ba):
        assert 0 <= s.ks <= 1 and 0 <= s.jensen_shannon <= 1 and 0 <= s.hellinger <= 1
        assert s.psi >= 0 and s.wasserstein >= 0 and 0 <= s.ks_p_value <= 1


def test_sketch_cdf_matches_the_kll_queries() -> None:
    col = column(np.random.default_rng(4).lognormal(0, 1, 300_000))
    view = sketch_cdf(col)
    pts = np.quantile(view.items, np.linspace(0, 1, 50)).astype(np.float32)
    assert np.allclose(view.cdf(pts), col.cdf(pts), atol=1e-12)
    # random ranks: where rank * n is an integer KLL's ceil() can round a floating-point 3.0000000000000004 up
    ranks = np.sort(np.random.default_rng(5).uniform(0.001, 0.999, 37))
    assert np.allclose(view.quantiles(ranks), col.quantiles(ranks))
    assert view.n == col.count and view.rank_error == col.rank_error > 0
    exact = SketchCDF.from_values(np.array([3.0, 1.0, 2.0, 2.0]))
    assert exact.cdf(np.array([0.0, 1.0, 2.0, 2.5, 3.0])).tolist() == [0, 0.25, 0.75, 0.75, 1.0]
    assert exact.quantiles((0.0, 0.25, 0.26, 0.75, 1.0)).tolist() == [1.0, 1.0, 2.0, 2.0, 3.0]


def test_sketch_cdf_keeps_item_weights_after_merges() -> None:
    """Merged sketches often have an empty level 0; the binding's iterator then reports weight 1 for
    every item (datasketches 5.2). The CDF read from the serialized levels matches KLL's own queries."""
    rng = np.random.default_rng(21)
    empty_level_zero = 0
    for _ in range(60):
        col = column(rng.normal(size=int(rng.integers(1, 3000))), k=int(rng.choice([8, 50, 400])))
        for _ in range(int(rng.integers(1, 6))):
            other = column(rng.normal(size=int(rng.integers(1, 20_000))), k=col.k)
            if rng.random() < 0.5:
                col.merge(other)
            else:
                col.update_array(rng.normal(size=int(rng.integers(1, 500))))
        view = sketch_cdf(col)
        items, weights = col.weighted_items()
        assert weights.sum() == view.n == col.count == col.kll.n
        pts = np.sort(rng.normal(size=40))
        assert np.allclose(view.cdf(pts), col.cdf(pts), atol=1e-12)
        assert np.allclose(view.cdf(pts, inclusive=False),
                           np.asarray(col.kll.get_cdf(pts, inclusive=False))[:-1], atol=1e-12)
        empty_level_zero += int(weights.size > 0 and weights.min() > 1)
    assert empty_level_zero > 5  # the case the per-item iterator got wrong was exercised


def test_ks_p_value_close_to_scipy() -> None:
    rng = np.random.default_rng(3)
    for shift, n, m in ((0.0, 5000, 5000), (0.3, 300, 300), (0.05, 2000, 2000), (0.1, 20_000, 500), (0.0, 40, 60)):
        ref, cur = rng.normal(0, 1, n), rng.normal(shift, 1, m)
        exact = stats.ks_2samp(ref, cur)
        ours = ks_p_value(exact.statistic, n, m)
        assert (ours < 0.05) == (exact.pvalue < 0.05)
        assert ours == pytest.approx(exact.pvalue, rel=0.25, abs=0.02)


def test_distribution_functions_against_scipy() -> None:
    for df in (1, 2, 5, 30, 200, 5000):
        for x in (0.01, 0.5, 1.0, 3.0, 10.0, 50.0, 400.0, 6000.0):
            assert chi2_sf(x, df) == pytest.approx(stats.chi2.sf(x, df), rel=1e-8, abs=1e-300)
    for p in (1e-10, 0.001, 0.025, 0.3, 0.5, 0.9, 0.999):
        assert norm_ppf(p) == pytest.approx(stats.norm.ppf(p), rel=1e-9)
    for z in (-3, 0, 1.96, 5):
        assert norm_sf(z) == pytest.approx(stats.norm.sf(z), rel=1e-9)
    for x in (0.05, 0.2, 0.3, 0.5, 0.8, 1.0, 1.36, 2.0, 3.0, 5.0):
        assert kolmogorov_sf(x) == pytest.approx(stats.kstwobign.sf(x), rel=1e-9, abs=1e-15)


# --- Evidently's stattests on the raw data -----------------------------------------------------------


def _evidently():  # -> module namespace with the stattest functions
    pytest.importorskip("pandas")
    warnings.simplefilter("ignore")
    from evidently.legacy.calculations.stattests import hellinger_distance, jensenshannon, ks_stattest
    from evidently.legacy.calculations.stattests import psi as ev_psi
    from evidently.legacy.calculations.stattests import wasserstein_distance_norm as wd
    from evidently.legacy.core import ColumnType

    return ColumnType.Numerical, ks_stattest, ev_psi, jensenshannon, hellinger_distance, wd


def histogram_masses(cdf: SketchCDF, edges: np.ndarray) -> np.ndarray:
    """numpy.histogram's bins ``[e_i, e_i+1)`` (outer bins open), read from a step CDF."""
    return np.diff(np.concatenate(([0.0], cdf.cdf(edges[1:-1], inclusive=False), [1.0])))


def sturges_edges(ref_col, cur_col) -> np.ndarray:  # noqa: ANN001
    """Evidently's numeric bins (numpy's Sturges rule over both samples), from the profiles alone."""
    n = ref_col.count + cur_col.count
    return np.linspace(min(ref_col.min, cur_col.min), max(ref_col.max, cur_col.max), int(np.ceil(np.log2(n) + 1)) + 1)


EVIDENTLY_SHAPES = {
    "uniform": lambda rng, n, s: rng.uniform(s, 1 + s, n),
    "beta": lambda rng, n, s: rng.beta(2, 5 + 10 * s, n),
    "normal": lambda rng, n, s: rng.normal(s, 1, n),
    "bimodal": DISTRIBUTIONS["bimodal"],
}


@pytest.mark.parametrize("shape", sorted(EVIDENTLY_SHAPES))
def test_numeric_scores_against_evidently(shape: str) -> None:
    pd = pytest.importorskip("pandas")
    numerical, ks_st, ev_psi, ev_js, ev_hel, ev_wd = _evidently()
    rng = np.random.default_rng(21)
    for shift in (0.0, 0.1, 0.5):
        ref, cur = EVIDENTLY_SHAPES[shape](rng, 20_000, 0.0), EVIDENTLY_SHAPES[shape](rng, 20_000, shift)
        sr, sc = pd.Series(ref), pd.Series(cur)
        cr, cc = column(ref), column(cur)
        vr, vc = sketch_cdf(cr), sketch_cdf(cc)
        ours = numeric_scores(cr, cc)
        # Wasserstein: the same definition (W1 / population std of the reference)
        w_ev = float(ev_wd._wasserstein_distance_norm(sr, sc, numerical, 0.1)[0])
        assert abs(ours.wasserstein - w_ev) <= 0.15 + 0.2 * w_ev
        # KS: Evidently reports ks_2samp's p-value; ours is conservative (from D less the rank error)
        p_ev = float(ks_st._ks_stat_test(sr, sc, numerical, 0.05)[0])
        assert ours.ks_p_value >= min(p_ev, 0.05) or ours.ks_p_value < 1e-6
        if p_ev < 1e-9:
            assert ours.ks_p_value < 1e-3
        # PSI and JS: Evidently's Sturges bins, rebuilt from the profiles' exact min, max and counts
        edges = sturges_edges(cr, cc)
        assert np.allclose(edges, np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges"))
        p, q = histogram_masses(vr, edges), histogram_masses(vc, edges)
        psi_ev = float(ev_psi._psi(sr, sc, numerical, 0.1)[0])
        if shape in ("uniform", "beta"):  # bounded support: every Sturges bin is populated, no 1e-6 fill-ins
            assert abs(psi(p, q) - psi_ev) <= 0.03 + 0.15 * psi_ev, (shift, psi(p, q), psi_ev)
        js_ev = float(ev_js._jensenshannon(sr, sc, numerical, 0.1, base=2)[0])
        # equal-width bins leave little mass in the outer ones, where the square root magnifies sketch noise
        assert abs(jensen_shannon(p, q) - js_ev) <= 0.07, (shift, jensen_shannon(p, q), js_ev)
        # Hellinger: Evidently bins the distinct values (Sturges on their count), densities x width
        keys = np.unique(np.concatenate([ref, cur]))
        h_edges = np.histogram_bin_edges(keys, bins="sturges")
        hel_ev = float(ev_hel._hellinger_distance(sr.copy(), sc.copy(), numerical, 0.1)[0])
        hel_ours = hellinger(histogram_masses(vr, h_edges), histogram_masses(vc, h_edges))
        assert abs(hel_ours - hel_ev) <= 0.07, (shift, hel_ours, hel_ev)
