"""The decision rule, multiple testing, insufficient data, and each data-quality signal on its own."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import driftline.stats
from driftline.errors import ConfigError
from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.stats import SIGNALS, DriftConfig, benjamini_hochberg, compare_profiles

CFG = ProfileConfig(categorical=frozenset({"label", "city", "cat"}))


def prof(features: dict, outputs: dict | None = None, cfg: ProfileConfig = CFG) -> WindowProfile:
    return WindowProfile(StreamKey.of("m", "v"), 0, 1, cfg).update(features, outputs)


def by_name(report: dict) -> dict:
    return {f["name"]: f for f in report["features"] + report["outputs"]}


def test_trivial_shift_at_a_million_rows_is_not_drift() -> None:
    rng = np.random.default_rng(0)
    ref_x, cur_x = rng.normal(0, 1, 1_000_000), rng.normal(0.02, 1, 1_000_000)
    assert stats.ks_2samp(ref_x, cur_x).pvalue < 1e-6  # a p-value alone would cry drift
    rep = compare_profiles(prof({"x": ref_x}), prof({"x": cur_x})).to_dict()
    item = by_name(rep)["x"]
    assert item["drift_detected"] is False and item["status"] == "ok"
    # the default effect is the normed Wasserstein distance: the exact 0.02, a fifth of the threshold
    assert item["method"] == "wasserstein" and item["effect"] == pytest.approx(0.02, abs=0.005)
    assert item["scores"]["ks"] < 0.02
    assert rep["dataset_drift"] is False


def test_real_shift_on_a_small_sample_is_drift() -> None:
    rng = np.random.default_rng(1)
    ref = prof({"x": rng.normal(0, 1, 50_000), "y": rng.normal(0, 1, 50_000), "label": rng.choice(list("ab"), 50_000)})
    cur = prof({"x": rng.normal(0.8, 1, 200), "y": rng.normal(0, 1, 200),
                "label": rng.choice(list("ab"), 200, p=[0.8, 0.2])})
    items = by_name(compare_profiles(ref, cur).to_dict())
    assert items["x"]["drift_detected"] is True
    assert items["label"]["drift_detected"] is True
    assert items["y"]["drift_detected"] is False
    assert items["x"]["scores"]["rank_error"] > 0  # the 50,000-row reference sketch has compacted...
    cur_only = compare_profiles(prof({"x": rng.normal(0, 1, 200)}), prof({"x": rng.normal(0.8, 1, 200)}))
    assert cur_only.features[0].scores["rank_error"] == 0.0  # ...a 200-row one has not: no penalty


def test_few_rows_are_insufficient_data_not_a_guess() -> None:
    rng = np.random.default_rng(2)
    ref = prof({"x": rng.normal(0, 1, 10_000), "city": rng.choice(list("ab"), 10_000)})
    cur = prof({"x": rng.normal(5, 1, 10), "city": ["c"] * 10})
    rep = compare_profiles(ref, cur).to_dict()
    assert {f["status"] for f in rep["features"]} == {"insufficient_data"}
    assert not any(f["drift_detected"] for f in rep["features"])
    assert rep["status"] == "insufficient_data" and rep["drift_share"] == 0.0 and not rep["dataset_drift"]
    assert by_name(rep)["x"]["scores"] == {} and by_name(rep)["x"]["p_value"] is None
    rep2 = compare_profiles(ref, cur, DriftConfig(min_rows=5)).to_dict()
    assert by_name(rep2)["x"]["drift_detected"] is True and by_name(rep2)["city"]["drift_detected"] is True
    # a column that is all missing in production has no values to compare either
    rep3 = compare_profiles(ref, prof({"x": np.full(500, np.nan), "city": rng.choice(list("ab"), 500)})).to_dict()
    assert by_name(rep3)["x"]["status"] == "insufficient_data" and by_name(rep3)["city"]["status"] == "ok"


def test_sketch_rank_error_cannot_make_drift() -> None:
    """A tiny sketch (k=8) misreads CDFs by far more than the KS threshold; the test subtracts that."""
    rng = np.random.default_rng(3)
    tiny = ProfileConfig(kll_k=8)
    raw_over_threshold = 0
    for _ in range(10):
        ref, cur = prof({"x": rng.normal(0, 1, 50_000)}, cfg=tiny), prof({"x": rng.normal(0, 1, 50_000)}, cfg=tiny)
        item = compare_profiles(ref, cur).to_dict()["features"][0]
        eps = item["scores"]["rank_error"]
        assert eps > 0.2
        # the KS test runs on the distance less both sketches' bounds, so noise is never significant
        if item["scores"]["ks"] <= eps:
            assert item["p_value"] == pytest.approx(1.0)
        raw_over_threshold += item["scores"]["ks"] >= 0.1
        assert not item["drift_detected"]
    assert raw_over_threshold >= 1  # without the correction some of these would have been alarms
    # a shift far beyond the sketch's error is still caught
    ref, cur = prof({"x": rng.normal(0, 1, 50_000)}, cfg=tiny), prof({"x": rng.normal(3, 1, 50_000)}, cfg=tiny)
    assert compare_profiles(ref, cur).features[0].drift_detected


def test_every_effect_accounts_for_rank_error() -> None:
    rng = np.random.default_rng(4)
    ref, cur = prof({"x": rng.normal(0, 1, 100_000)}), prof({"x": rng.normal(0.3, 1.2, 100_000)})
    for method in ("ks", "psi", "jensen_shannon", "hellinger", "wasserstein"):
        item = compare_profiles(ref, cur, DriftConfig(numeric_method=method)).to_dict()["features"][0]
        assert item["method"] == method
        assert 0 < item["effect"] <= item["scores"][method]
    # KS, a maximum over many points, loses both sketches' full bound in quadrature
    item = compare_profiles(ref, cur, DriftConfig(numeric_method="ks")).to_dict()["features"][0]
    eps = item["scores"]["rank_error"]
    assert item["effect"] == pytest.approx((item["scores"]["ks"] ** 2 - eps**2) ** 0.5)


def test_no_false_alarms_across_many_features_with_bh() -> None:
    rng = np.random.default_rng(3)
    n_feat = 60
    ref = prof({f"f{i}": rng.normal(0, 1, 2000) for i in range(n_feat)})
    cur = prof({f"f{i}": rng.normal(0, 1, 2000) for i in range(n_feat)})
    loose = DriftConfig(thresholds={"ks": 0.0})  # decide on significance alone
    flagged = [f for f in compare_profiles(ref, cur, loose).to_dict()["features"] if f["drift_detected"]]
    assert len(flagged) <= 1


def test_report_p_values_are_benjamini_hochberg_adjusted() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    shifts = [0.0] * 12 + [0.06, 0.08, 0.1, 0.2]  # weak shifts whose raw p-values straddle 0.05
    ref = prof({f"f{i}": rng.normal(0, 1, n) for i in range(len(shifts))}, {"score": rng.random(n)})
    cur = prof({f"f{i}": rng.normal(s, 1, n) for i, s in enumerate(shifts)}, {"score": rng.random(n)})
    none = compare_profiles(ref, cur, DriftConfig(correction="none", thresholds={"ks": 0.0}))
    bh = compare_profiles(ref, cur, DriftConfig(thresholds={"ks": 0.0}))
    raw = [c.raw_p_value for c in none.features + none.outputs]
    assert [c.p_value for c in none.features + none.outputs] == raw
    assert np.allclose([c.p_value for c in bh.features + bh.outputs], benjamini_hochberg(raw))
    assert np.allclose(benjamini_hochberg(raw), stats.false_discovery_control(raw, method="bh"))
    n_none = sum(c.drift_detected for c in none.features)
    n_bh = sum(c.drift_detected for c in bh.features)
    assert n_bh <= n_none and n_none >= 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=50))
def test_benjamini_hochberg_matches_scipy(p: list[float]) -> None:
    ours = benjamini_hochberg(p)
    theirs = stats.false_discovery_control(np.asarray(p), method="bh")
    assert np.allclose(ours, theirs)
    assert np.all(ours >= np.asarray(p) - 1e-12)


def test_thresholds_per_method_and_feature_are_configurable() -> None:
    rng = np.random.default_rng(4)
    ref = prof({"a": rng.normal(0, 1, 20_000), "b": rng.normal(0, 1, 20_000), "c": rng.normal(0, 1, 20_000)})
    cur = prof({"a": rng.normal(0.5, 1, 20_000), "b": rng.normal(0.5, 1, 20_000), "c": rng.normal(0.5, 1, 20_000)})
    default = by_name(compare_profiles(ref, cur).to_dict())
    assert all(default[k]["drift_detected"] for k in "abc")
    cfg = DriftConfig(feature_thresholds={"b": 0.6}, feature_methods={"a": "psi", "c": "tvd"},
                      thresholds={"psi": 1.0})
    custom = by_name(compare_profiles(ref, cur, cfg).to_dict())
    assert custom["a"]["method"] == "psi" and custom["a"]["threshold"] == 1.0 and not custom["a"]["drift_detected"]
    assert custom["b"]["threshold"] == 0.6 and not custom["b"]["drift_detected"]
    assert custom["c"]["method"] == "wasserstein"  # a categorical method on a numeric column falls back to the default
    for bad, match in (({"numeric_method": "magic"}, "unknown numeric drift method 'magic'"),
                       ({"categorical_method": "ks"}, "unknown categorical drift method"),
                       ({"thresholds": {"kss": 0.1}}, "kss"),
                       ({"feature_methods": {"a": "nope"}}, "'nope' for column 'a'"),
                       ({"thresholds": {"ks": -1.0}}, "threshold"),
                       ({"alpha": 1.5}, "alpha"), ({"min_rows": 0}, "min_rows"), ({"correction": "bonf"}, "bh"),
                       ({"drift_share_threshold": 0.0}, "drift_share"), ({"bins": 1}, "bins")):
        with pytest.raises(ConfigError, match=match):
            DriftConfig(**bad)


def test_dataset_drift_share_and_outputs() -> None:
    rng = np.random.default_rng(5)
    n = 5000
    ref = prof({f"f{i}": rng.normal(0, 1, n) for i in range(4)}, {"score": rng.beta(2, 5, n), "label": rng.choice(list("ab"), n)})
    cur = prof({f"f{i}": rng.normal(1.0 if i < 2 else 0, 1, n) for i in range(4)},
               {"score": rng.beta(5, 2, n), "label": rng.choice(list("ab"), n, p=[0.2, 0.8])})
    rep = compare_profiles(ref, cur).to_dict()
    assert rep["drift_share"] == 0.5 and rep["dataset_drift"] is True and rep["status"] == "drift"
    outputs = {o["name"]: o for o in rep["outputs"]}
    assert outputs["score"]["drift_detected"] and outputs["score"]["type"] == "numeric"
    assert outputs["label"]["drift_detected"] and outputs["label"]["type"] == "categorical"
    assert {"chi2_p_value", "tvd", "psi", "jensen_shannon"} <= set(outputs["label"]["scores"])
    assert compare_profiles(ref, cur, DriftConfig(drift_share_threshold=0.75)).to_dict()["dataset_drift"] is False


def test_report_shape_is_the_contract() -> None:
    rng = np.random.default_rng(9)
    rep = compare_profiles(prof({"x": rng.normal(0, 1, 500), "city": rng.choice(list("ab"), 500)}),
                           prof({"x": rng.normal(0, 1, 500), "city": rng.choice(list("ab"), 500)})).to_dict()
    assert {"dataset_drift", "drift_share", "status", "features", "outputs", "data_quality", "reference_rows",
            "current_rows"} <= set(rep)
    assert set(rep["data_quality"]["counts"]) == set(SIGNALS)
    for f in rep["features"]:
        assert {"name", "type", "drift_detected", "status", "scores"} <= set(f)
        assert f["status"] in ("ok", "drift", "insufficient_data", "missing_column", "type_change")
    numeric, categorical = by_name(rep)["x"]["scores"], by_name(rep)["city"]["scores"]
    assert {"ks", "ks_p_value", "psi", "jensen_shannon", "wasserstein", "hellinger", "mean_shift"} <= set(numeric)
    assert {"chi2_p_value", "tvd", "jensen_shannon", "psi", "new_category_rate"} <= set(categorical)


# --- data quality and training-serving skew: each signal on its own ---------------------------------

N = 4000


def _reference(rng: np.random.Generator) -> WindowProfile:
    return prof({"num": rng.normal(0, 1, N), "other": rng.uniform(0, 1, N), "cat": rng.choice(list("abc"), N)})


def _current(rng: np.random.Generator, signal: str) -> WindowProfile:
    num, other, cat = rng.normal(0, 1, N), rng.uniform(0, 1, N), rng.choice(list("abc"), N)
    cols: dict = {"num": num, "other": other, "cat": cat}
    cfg = CFG
    if signal == "missing_rate_jump":
        num[: N // 5] = np.nan
    elif signal == "inf_values":
        num[:40] = np.inf
    elif signal == "invalid_values":
        cols["num"] = [*num[:-50].tolist(), *(["n/a?"] * 50)]
    elif signal == "out_of_range":
        cols["other"] = rng.uniform(0.5, 1.5, N)
    elif signal == "constant":
        cols["num"] = np.full(N, 0.5)
    elif signal == "missing_column":
        del cols["other"]
    elif signal == "new_column":
        cols["extra"] = rng.normal(0, 1, N)
    elif signal == "type_change":
        cols["cat"] = rng.integers(0, 3, N).astype(float)
        cfg = ProfileConfig()
    elif signal == "new_categories":
        cols["cat"] = rng.choice(list("abcd"), N)
    return prof(cols, cfg=cfg)


SIGNAL_COLUMN = {"missing_rate_jump": "num", "inf_values": "num", "invalid_values": "num", "out_of_range": "other",
                 "constant": "num", "missing_column": "other", "new_column": "extra", "type_change": "cat",
                 "new_categories": "cat"}


@pytest.mark.parametrize("signal", SIGNALS)
def test_each_quality_signal_on_its_own(signal: str) -> None:
    rng = np.random.default_rng(zlib.crc32(signal.encode()))
    ref = _reference(rng)
    baseline = compare_profiles(ref, _current(rng, "none")).to_dict()
    assert baseline["data_quality"]["issues"] == []
    rep = compare_profiles(ref, _current(rng, signal)).to_dict()
    found = {(i["signal"], i["column"]) for i in rep["data_quality"]["issues"]}
    assert found == {(signal, SIGNAL_COLUMN[signal])}
    assert rep["data_quality"]["counts"][signal] == 1
    assert all(i["role"] == "feature" for i in rep["data_quality"]["issues"])
    if signal in ("missing_column", "type_change"):
        assert by_name(rep)[SIGNAL_COLUMN[signal]]["status"] == signal


def test_quality_signals_on_outputs_too() -> None:
    rng = np.random.default_rng(12)
    ref = prof({"x": rng.normal(0, 1, N)}, {"score": rng.random(N)})
    score = rng.random(N)
    score[: N // 4] = np.nan
    rep = compare_profiles(ref, prof({"x": rng.normal(0, 1, N)}, {"score": score})).to_dict()
    assert [(i["signal"], i["column"], i["role"]) for i in rep["data_quality"]["issues"]] == [
        ("missing_rate_jump", "score", "output")]


def test_identical_profiles_have_zero_distance() -> None:
    rng = np.random.default_rng(7)
    p = prof({"x": rng.normal(0, 1, 100_000), "city": rng.choice(list("abc"), 10_000 * 10)})
    rep = compare_profiles(p, p.copy()).to_dict()
    for f in rep["features"]:
        assert not f["drift_detected"] and f["effect"] == 0.0
        for k in ("ks", "psi", "jensen_shannon", "tvd", "wasserstein", "hellinger", "chi2"):
            if f["scores"].get(k) is not None:
                assert f["scores"][k] == pytest.approx(0.0, abs=1e-9)
    assert rep["data_quality"]["issues"] == []


def test_public_surface() -> None:
    assert {"compare_profiles", "DriftConfig", "DriftReport", "ColumnResult", "numeric_scores",
            "categorical_scores", "benjamini_hochberg", "sketch_cdf", "SketchCDF"} <= set(driftline.stats.__all__)
    for name in driftline.stats.__all__:
        assert hasattr(driftline.stats, name)


def test_core_statistics_run_without_scipy() -> None:
    """Edge devices install no scipy: the core must import and compute without it."""
    code = textwrap.dedent("""
        import sys
        sys.modules["scipy"] = None  # any "import scipy..." now raises ImportError
        import numpy as np
        from driftline.profile import ProfileConfig, StreamKey, WindowProfile
        from driftline.stats import compare_profiles
        rng = np.random.default_rng(0)
        cfg = ProfileConfig(categorical=frozenset({"c"}))
        a = WindowProfile(StreamKey.of("m", "v"), 0, 1, cfg).update({"x": rng.normal(0, 1, 5000), "c": rng.choice(list("ab"), 5000)})
        b = WindowProfile(StreamKey.of("m", "v"), 0, 1, cfg).update({"x": rng.normal(1, 1, 5000), "c": rng.choice(list("ab"), 5000)})
        rep = compare_profiles(a, b).to_dict()
        assert [f["drift_detected"] for f in rep["features"]] == [True, False], rep
        assert not [m for m in sys.modules if m.startswith("scipy") and sys.modules[m] is not None]
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
