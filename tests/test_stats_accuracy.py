"""Sketch-based statistics against exact computations on the raw data (scipy, numpy, Evidently).

The bounds asserted here are the ones documented in docs/statistics.md, at default settings
(KLL k=200, 10 reference-quantile bins, 256-point grid), 20,000 rows a side.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.stats import categorical_scores, exact_categorical_scores, exact_numeric_scores, numeric_scores
from driftline.stats.distributions import chi2_sf, ks_p_value, norm_ppf, norm_sf
from tests.stats_cases import DISTRIBUTIONS, SHIFTS, make_pair

BOUNDS = {  # |sketch - exact| <= absolute + relative * exact
    "ks": (0.02, 0.0),
    "psi": (0.03, 0.10),
    "jensen_shannon": (0.04, 0.0),
    "hellinger": (0.03, 0.0),
    "wasserstein": (0.15, 0.20),  # heavy tails: a small rank error is a large error in value
}


def profile_of(values: np.ndarray, cfg: ProfileConfig | None = None) -> WindowProfile:
    return WindowProfile(StreamKey.of("m", "v"), 0, 1, cfg or ProfileConfig()).update({"x": values})


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("dist", sorted(DISTRIBUTIONS))
def test_numeric_scores_within_documented_bounds(dist: str, shift: float) -> None:
    for seed in range(2):
        ref, cur = make_pair(dist, shift, seed)
        sk = numeric_scores(profile_of(ref).features["x"], profile_of(cur).features["x"]).as_dict()
        fr, fc = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
        exact = exact_numeric_scores(fr, fc)
        assert exact["ks"] == pytest.approx(stats.ks_2samp(fr, fc).statistic, abs=1e-12)
        if np.std(fr) > 0:
            assert exact["wasserstein"] == pytest.approx(stats.wasserstein_distance(fr, fc) / np.std(fr), rel=1e-9)
        for method, (absolute, relative) in BOUNDS.items():
            err = abs(sk[method] - exact[method])
            assert err <= absolute + relative * exact[method], (method, dist, shift, seed, sk[method], exact[method])


def test_wasserstein_matches_evidently() -> None:
    pd = pytest.importorskip("pandas")
    from evidently.legacy.calculations.stattests.wasserstein_distance_norm import _wasserstein_distance_norm
    from evidently.legacy.core import ColumnType

    for dist in ("normal", "bimodal", "small_integer"):
        ref, cur = make_pair(dist, 0.5, 11)
        ev, _ = _wasserstein_distance_norm(pd.Series(ref), pd.Series(cur), ColumnType.Numerical, 0.1)
        sk = numeric_scores(profile_of(ref).features["x"], profile_of(cur).features["x"]).wasserstein
        assert abs(sk - float(ev)) <= 0.15 + 0.2 * float(ev)


def test_ks_p_value_agrees_with_scipy_decision() -> None:
    rng = np.random.default_rng(3)
    for shift, n in ((0.0, 5000), (0.3, 300), (0.05, 2000)):
        ref, cur = rng.normal(0, 1, n), rng.normal(shift, 1, n)
        exact = stats.ks_2samp(ref, cur)
        ours = ks_p_value(exact.statistic, n, n)
        assert (ours < 0.05) == (exact.pvalue < 0.05)
        assert ours == pytest.approx(exact.pvalue, rel=0.25, abs=0.02)


def cat_profile(values: np.ndarray) -> WindowProfile:
    return WindowProfile(StreamKey.of("m", "v"), 0, 1, ProfileConfig(categorical=frozenset({"c"}))).update({"c": values})


@pytest.mark.parametrize("case", ["same", "shift", "new_categories", "many_categories"])
def test_categorical_scores_match_exact_and_scipy(case: str) -> None:
    rng = np.random.default_rng(5)
    cats = np.array(list("abcdef"))
    ref = rng.choice(cats, 20_000, p=[0.3, 0.25, 0.2, 0.15, 0.07, 0.03])
    cur = {
        "same": lambda: rng.choice(cats, 15_000, p=[0.3, 0.25, 0.2, 0.15, 0.07, 0.03]),
        "shift": lambda: rng.choice(cats, 15_000, p=[0.1, 0.25, 0.2, 0.15, 0.2, 0.1]),
        "new_categories": lambda: np.concatenate([rng.choice(cats, 14_000), np.array(["zz"] * 1000)]),
        "many_categories": lambda: rng.integers(0, 200, 15_000).astype(str),
    }[case]()
    sk = categorical_scores(cat_profile(ref).features["c"], cat_profile(cur).features["c"])
    exact = exact_categorical_scores(ref, cur)
    assert sk.exact  # below the sketch's capacity the counts are exact, so the scores are too
    for k in ("chi2", "tvd", "jensen_shannon", "psi", "new_category_rate"):
        assert sk.as_dict()[k] == pytest.approx(exact[k], rel=1e-9, abs=1e-12), k
    labels = sorted(set(ref) | set(cur))
    table = np.array([[np.sum(ref == c) for c in labels], [np.sum(cur == c) for c in labels]])
    chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
    assert sk.chi2 == pytest.approx(chi2, rel=1e-9)
    assert sk.chi2_p_value == pytest.approx(p, rel=1e-6, abs=1e-300)


def test_categorical_matches_evidently_definitions() -> None:
    pd = pytest.importorskip("pandas")
    from evidently.legacy.calculations.stattests.hellinger_distance import _hellinger_distance
    from evidently.legacy.calculations.stattests.jensenshannon import _jensenshannon
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(9)
    ref = rng.choice(list("abcd"), 10_000, p=[0.4, 0.3, 0.2, 0.1])
    cur = rng.choice(list("abcd"), 10_000, p=[0.25, 0.25, 0.25, 0.25])
    sk = categorical_scores(cat_profile(ref).features["c"], cat_profile(cur).features["c"])
    js, _ = _jensenshannon(pd.Series(ref), pd.Series(cur), ColumnType.Categorical, 0.1, base=2)
    hel, _ = _hellinger_distance(pd.Series(ref), pd.Series(cur), ColumnType.Categorical, 0.1)
    assert sk.jensen_shannon == pytest.approx(float(js), abs=1e-9)
    exact = exact_categorical_scores(ref, cur)
    assert float(hel) == pytest.approx(np.sqrt(1 - np.sum(np.sqrt(
        np.unique(ref, return_counts=True)[1] / ref.size * np.unique(cur, return_counts=True)[1] / cur.size))), abs=1e-9)
    assert exact["tvd"] == pytest.approx(sk.tvd)


def test_high_cardinality_falls_back_to_bounded_other_bucket() -> None:
    rng = np.random.default_rng(2)
    ref = rng.zipf(1.3, 30_000).astype(str)
    cur = rng.zipf(1.3, 30_000).astype(str)
    sk = categorical_scores(cat_profile(ref).features["c"], cat_profile(cur).features["c"])
    exact = exact_categorical_scores(ref, cur)
    assert not sk.exact
    assert sk.n_ref == 30_000 and sk.n_cur == 30_000  # totals stay exact
    assert sk.tvd <= exact["tvd"] + 0.02  # pooling rare categories can only hide, not invent, distance


def test_distribution_functions_against_scipy() -> None:
    for df in (1, 2, 5, 30, 200):
        for x in (0.01, 0.5, 1.0, 3.0, 10.0, 50.0, 400.0):
            assert chi2_sf(x, df) == pytest.approx(stats.chi2.sf(x, df), rel=1e-8, abs=1e-300)
    for p in (1e-10, 0.001, 0.025, 0.3, 0.5, 0.9, 0.999):
        assert norm_ppf(p) == pytest.approx(stats.norm.ppf(p), rel=1e-9)
    for z in (-3, 0, 1.96, 5):
        assert norm_sf(z) == pytest.approx(stats.norm.sf(z), rel=1e-9)
    for d in (0.01, 0.05, 0.1, 0.3):
        exact = stats.kstwobign.sf(d * np.sqrt(500))
        from driftline.stats.distributions import kolmogorov_sf

        assert kolmogorov_sf(d * np.sqrt(500)) == pytest.approx(exact, rel=1e-6, abs=1e-12)
