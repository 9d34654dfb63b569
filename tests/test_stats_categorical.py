"""Categorical scores from frequent-items sketches against scipy, the raw data and Evidently's stattests."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.stats import (
    CategoryCounts,
    DriftConfig,
    categorical_scores,
    compare_profiles,
    exact_categorical_scores,
)
from driftline.stats.categorical import scores_from_counts

CATS = np.array(list("abcdef"))
P_REF = [0.3, 0.25, 0.2, 0.15, 0.07, 0.03]


def column(values: np.ndarray | list[str]):  # -> CategoricalColumn
    cfg = ProfileConfig(categorical=frozenset({"c"}))
    return WindowProfile(StreamKey.of("m", "v"), 0, 1, cfg).update({"c": np.asarray(values)}).features["c"]


def cases(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    ref = rng.choice(CATS, 20_000, p=P_REF)
    return {
        "same": (ref, rng.choice(CATS, 15_000, p=P_REF)),
        "shift": (ref, rng.choice(CATS, 15_000, p=[0.1, 0.25, 0.2, 0.15, 0.2, 0.1])),
        "new_categories": (ref, np.concatenate([rng.choice(CATS, 14_000), np.array(["zz"] * 1000)])),
        "lost_categories": (ref, rng.choice(CATS[:3], 15_000)),
        "small": (ref[:200], rng.choice(CATS, 40, p=P_REF)),
        "many_categories": (rng.integers(0, 300, 20_000).astype(str), rng.integers(0, 300, 15_000).astype(str)),
    }


@pytest.mark.parametrize("case", ["same", "shift", "new_categories", "lost_categories", "small", "many_categories"])
def test_below_capacity_scores_are_exact_and_match_scipy(case: str) -> None:
    ref, cur = cases(np.random.default_rng(5))[case]
    sk = categorical_scores(column(ref), column(cur))
    exact = exact_categorical_scores(ref, cur)
    assert sk.exact and sk.count_error == 0
    for k, v in exact.items():
        assert sk.as_dict()[k] == pytest.approx(v, rel=1e-12, abs=1e-15), k
    labels = sorted(set(ref) | set(cur))
    table = np.array([[np.sum(ref == c) for c in labels], [np.sum(cur == c) for c in labels]])
    chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
    assert sk.chi2 == pytest.approx(chi2, rel=1e-9)
    assert sk.chi2_p_value == pytest.approx(p, rel=1e-6, abs=1e-300)
    pr, pc = table[0] / table[0].sum(), table[1] / table[1].sum()
    assert sk.tvd == pytest.approx(0.5 * np.abs(pr - pc).sum(), abs=1e-12)
    from scipy.spatial.distance import jensenshannon

    assert sk.jensen_shannon == pytest.approx(jensenshannon(pr, pc, base=2), abs=1e-9)


def test_new_category_rate_and_names() -> None:
    ref, cur = cases(np.random.default_rng(6))["new_categories"]
    sk = categorical_scores(column(ref), column(cur))
    assert sk.new_categories == ["zz"]
    assert sk.new_category_rate == pytest.approx(1000 / 15_000)


@pytest.mark.parametrize("case", ["same", "shift", "new_categories", "lost_categories"])
def test_against_evidently(case: str) -> None:
    pd = pytest.importorskip("pandas")
    warnings.simplefilter("ignore")
    from evidently.legacy.calculations.stattests.chisquare_stattest import _chi_stat_test
    from evidently.legacy.calculations.stattests.hellinger_distance import _hellinger_distance
    from evidently.legacy.calculations.stattests.jensenshannon import _jensenshannon
    from evidently.legacy.calculations.stattests.psi import _psi
    from evidently.legacy.calculations.stattests.tvd_stattest import _total_variation_distance
    from evidently.legacy.core import ColumnType

    cat = ColumnType.Categorical
    ref, cur = cases(np.random.default_rng(7))[case]
    sr, sc = pd.Series(ref), pd.Series(cur)
    sk = categorical_scores(column(ref), column(cur))
    assert sk.tvd == pytest.approx(float(_total_variation_distance(sr, sc)), abs=1e-12)
    assert sk.jensen_shannon == pytest.approx(float(_jensenshannon(sr, sc, cat, 0.1, base=2)[0]), abs=1e-9)
    assert sk.hellinger == pytest.approx(float(_hellinger_distance(sr.copy(), sc.copy(), cat, 0.1)[0]), abs=1e-9)
    # PSI: both floor empty categories at 1e-4 (no category here has a smaller non-zero share)
    assert sk.psi == pytest.approx(float(_psi(sr, sc, cat, 0.1)[0]), rel=1e-9)
    if case != "new_categories":  # Evidently's goodness-of-fit divides by a zero expected count there
        # Evidently tests current against the reference's shares as if they were known (goodness of
        # fit); ours is the two-sample test of homogeneity. With a much larger reference they agree.
        big_ref = np.tile(ref, 25)
        ours = categorical_scores(column(big_ref), column(cur[:2000])).chi2_p_value
        theirs = float(_chi_stat_test(pd.Series(big_ref), pd.Series(cur[:2000]), cat, 0.05)[0])
        assert (ours < 0.05) == (theirs < 0.05)
        assert np.log10(max(ours, 1e-300)) == pytest.approx(np.log10(max(theirs, 1e-300)), rel=0.1, abs=0.5)


def test_high_cardinality_past_capacity_invents_no_drift() -> None:
    """Two samples of one 3,000-category distribution retain different categories in their sketches."""
    rng = np.random.default_rng(2)
    for draw in (lambda n: rng.integers(0, 3000, n), lambda n: rng.zipf(1.3, n)):
        ref, cur = draw(50_000).astype(str), draw(50_000).astype(str)
        a, b = column(ref), column(cur)
        sk = categorical_scores(a, b)
        assert not sk.exact and sk.count_error > 0
        assert sk.n_ref == 50_000 and sk.n_cur == 50_000  # totals stay exact
        assert sk.tvd <= 0.02 and sk.chi2_p_value > 0.01 and sk.new_category_rate == 0.0
        pa = WindowProfile(StreamKey.of("m", "v"), 0, 1, ProfileConfig(categorical=frozenset({"c"})))
        pb = WindowProfile(StreamKey.of("m", "v"), 0, 1, ProfileConfig(categorical=frozenset({"c"})))
        rep = compare_profiles(pa.update({"c": ref}), pb.update({"c": cur})).to_dict()
        assert not rep["features"][0]["drift_detected"] and rep["data_quality"]["issues"] == []


def test_high_cardinality_past_capacity_still_sees_a_moved_head() -> None:
    rng = np.random.default_rng(3)
    ref = np.where(rng.random(50_000) < 0.5, "head", rng.integers(0, 5000, 50_000).astype(str))
    cur = np.where(rng.random(50_000) < 0.2, "head", rng.integers(0, 5000, 50_000).astype(str))
    sk = categorical_scores(column(ref), column(cur))
    assert not sk.exact
    assert sk.tvd >= 0.25  # true TVD about 0.3; pooling can only hide part of it
    assert sk.tvd <= exact_categorical_scores(ref, cur)["tvd"] + 1e-9
    assert sk.chi2_p_value < 1e-6


def test_least_different_tables_from_bounds() -> None:
    # ref knows a in [10, 15], b in [40, 45]; cur is exact: a = 30, b = 20 (shares over n = 100 / 50)
    ref = CategoryCounts({"a": 10, "b": 40}, 5, 100)
    cur = CategoryCounts({"a": 30, "b": 20}, 0, 50)
    s = scores_from_counts(ref, cur)
    # a: ref share [0.10, 0.15] vs 0.6 -> 0.15 vs 0.6; b: [0.40, 0.45] vs 0.4 -> overlap, both 0.4
    p = np.array([0.15, 0.40, 0.45])
    q = np.array([0.60, 0.40, 0.00])
    assert s.tvd == pytest.approx(0.5 * np.abs(p - q).sum())
    assert not s.exact and s.count_error == 0.05 and s.new_category_rate == 0.0


WORDS = st.sampled_from(["a", "b", "c", "d", "e", "f", "g"])


@settings(max_examples=60, deadline=None)
@given(st.lists(WORDS, min_size=1, max_size=200), st.lists(WORDS, min_size=1, max_size=200))
def test_properties(a: list[str], b: list[str]) -> None:
    ca, cb = column(a), column(b)
    ab, ba = categorical_scores(ca, cb), categorical_scores(cb, ca)
    for k in ("chi2", "chi2_p_value", "tvd", "jensen_shannon", "hellinger"):
        assert ab.as_dict()[k] == pytest.approx(ba.as_dict()[k], rel=1e-9, abs=1e-12), k
    assert ab.psi == pytest.approx(ba.psi, rel=1e-9)  # symmetric formula on the same categories
    same = categorical_scores(ca, ca.copy())
    assert same.tvd == same.jensen_shannon == same.psi == same.chi2 == 0.0 and same.chi2_p_value == 1.0
    for s in (ab, ba):
        assert 0 <= s.tvd <= 1 and 0 <= s.jensen_shannon <= 1 and 0 <= s.chi2_p_value <= 1


def test_categorical_method_and_thresholds() -> None:
    rng = np.random.default_rng(8)
    cfg = ProfileConfig(categorical=frozenset({"c"}))
    ref = WindowProfile(StreamKey.of("m", "v"), 0, 1, cfg).update({"c": rng.choice(CATS, 20_000, p=P_REF)})
    cur = WindowProfile(StreamKey.of("m", "v"), 0, 1, cfg).update(
        {"c": rng.choice(CATS, 20_000, p=[0.25, 0.25, 0.2, 0.15, 0.1, 0.05])})
    item = compare_profiles(ref, cur).to_dict()["features"][0]
    # a 5.5-point share move at 20,000 rows: material at the default TVD threshold of 0.05, not at 0.1
    assert item["method"] == "tvd" and item["effect"] == item["scores"]["tvd"] and item["drift_detected"]
    item = compare_profiles(ref, cur, DriftConfig(thresholds={"tvd": 0.1})).to_dict()["features"][0]
    assert item["threshold"] == 0.1 and not item["drift_detected"]
    item = compare_profiles(ref, cur, DriftConfig(categorical_method="psi", thresholds={"psi": 0.02})).to_dict()
    assert item["features"][0]["method"] == "psi" and item["features"][0]["drift_detected"]
