"""The decision rule, multiple testing, insufficient data, and each data-quality signal on its own."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from driftline.cli.main import main
from driftline.errors import ConfigError
from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.stats import DriftConfig, benjamini_hochberg, compare_profiles
from driftline.wire import write_profile_file

CFG = ProfileConfig(categorical=frozenset({"label", "city"}))


def prof(features: dict, outputs: dict | None = None, cfg: ProfileConfig = CFG) -> WindowProfile:
    return WindowProfile(StreamKey.of("m", "v"), 0, 1, cfg).update(features, outputs)


def by_name(report: dict) -> dict:
    return {f["name"]: f for f in report["features"] + report["outputs"]}


def test_trivial_shift_at_a_million_rows_is_not_drift() -> None:
    rng = np.random.default_rng(0)
    ref = prof({"x": rng.normal(0, 1, 1_000_000)})
    cur = prof({"x": rng.normal(0.02, 1, 1_000_000)})
    assert stats.ks_2samp(rng.normal(0, 1, 1_000_000), rng.normal(0.02, 1, 1_000_000)).pvalue < 1e-6
    rep = compare_profiles(ref, cur).to_dict()
    assert by_name(rep)["x"]["drift_detected"] is False
    assert rep["dataset_drift"] is False


def test_real_shift_on_a_small_sample_is_drift() -> None:
    rng = np.random.default_rng(1)
    ref = prof({"x": rng.normal(0, 1, 50_000), "y": rng.normal(0, 1, 50_000)})
    cur = prof({"x": rng.normal(1.0, 1, 200), "y": rng.normal(0, 1, 200)})
    items = by_name(compare_profiles(ref, cur).to_dict())
    assert items["x"]["drift_detected"] is True
    assert items["y"]["drift_detected"] is False


def test_few_rows_are_insufficient_data_not_a_guess() -> None:
    rng = np.random.default_rng(2)
    ref = prof({"x": rng.normal(0, 1, 10_000)})
    cur = prof({"x": rng.normal(5, 1, 10)})
    rep = compare_profiles(ref, cur).to_dict()
    assert by_name(rep)["x"]["status"] == "insufficient_data"
    assert rep["status"] == "insufficient_data" and rep["drift_share"] == 0.0
    rep2 = compare_profiles(ref, cur, DriftConfig(min_rows=5)).to_dict()
    assert by_name(rep2)["x"]["drift_detected"] is True


def test_no_false_alarms_across_many_features_with_bh() -> None:
    rng = np.random.default_rng(3)
    n_feat = 60
    ref = prof({f"f{i}": rng.normal(0, 1, 2000) for i in range(n_feat)})
    cur = prof({f"f{i}": rng.normal(0, 1, 2000) for i in range(n_feat)})
    loose = DriftConfig(thresholds={"ks": 0.0})  # decide on significance alone
    flagged = [f for f in compare_profiles(ref, cur, loose).to_dict()["features"] if f["drift_detected"]]
    assert len(flagged) <= 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=50))
def test_benjamini_hochberg_matches_scipy(p: list[float]) -> None:
    ours = benjamini_hochberg(p)
    theirs = stats.false_discovery_control(np.asarray(p), method="bh")
    assert np.allclose(ours, theirs)
    assert np.all(ours >= np.asarray(p) - 1e-12)


def test_thresholds_per_method_and_feature_are_configurable() -> None:
    rng = np.random.default_rng(4)
    ref = prof({"a": rng.normal(0, 1, 20_000), "b": rng.normal(0, 1, 20_000)})
    cur = prof({"a": rng.normal(0.5, 1, 20_000), "b": rng.normal(0.5, 1, 20_000)})
    default = by_name(compare_profiles(ref, cur).to_dict())
    assert default["a"]["drift_detected"] and default["b"]["drift_detected"]
    cfg = DriftConfig(feature_thresholds={"b": 0.5}, feature_methods={"a": "psi"}, thresholds={"psi": 1.0})
    custom = by_name(compare_profiles(ref, cur, cfg).to_dict())
    assert custom["a"]["method"] == "psi" and not custom["a"]["drift_detected"]
    assert custom["b"]["threshold"] == 0.5 and not custom["b"]["drift_detected"]
    with pytest.raises(ConfigError, match="unknown numeric drift method"):
        DriftConfig(numeric_method="magic")


def test_dataset_drift_share_and_outputs() -> None:
    rng = np.random.default_rng(5)
    n = 5000
    ref = prof({f"f{i}": rng.normal(0, 1, n) for i in range(4)}, {"score": rng.beta(2, 5, n)})
    cur = prof({f"f{i}": rng.normal(1.0 if i < 2 else 0, 1, n) for i in range(4)}, {"score": rng.beta(5, 2, n)})
    rep = compare_profiles(ref, cur).to_dict()
    assert rep["drift_share"] == 0.5 and rep["dataset_drift"] is True
    assert by_name(rep)["score"]["drift_detected"] is True
    rep = compare_profiles(ref, cur, DriftConfig(drift_share_threshold=0.75)).to_dict()
    assert rep["dataset_drift"] is False


def signals(rep: dict) -> set[tuple[str, str]]:
    return {(i["signal"], i["column"]) for i in rep["data_quality"]["issues"]}


def test_each_quality_signal_separately() -> None:
    rng = np.random.default_rng(6)
    n = 4000
    ref = prof({"miss": rng.normal(0, 1, n), "rng": rng.uniform(0, 1, n), "const": rng.normal(0, 1, n),
                "city": rng.choice(["a", "b"], n), "gone": rng.normal(0, 1, n), "kind": rng.normal(0, 1, n),
                "inf": rng.normal(0, 1, n), "typed": rng.normal(0, 1, n)})
    miss = rng.normal(0, 1, n)
    miss[: n // 5] = np.nan
    infs = rng.normal(0, 1, n)
    infs[:50] = np.inf
    typed = [*rng.normal(0, 1, n - 100).tolist(), *(["oops"] * 100)]
    cur = WindowProfile(StreamKey.of("m", "v"), 0, 1, ProfileConfig(categorical=frozenset({"city", "kind"})))
    cur.update({"miss": miss, "rng": rng.uniform(0.5, 1.5, n), "const": np.full(n, 3.0),
                "city": rng.choice(["a", "b", "c"], n), "kind": rng.choice(["x", "y"], n), "inf": infs,
                "typed": typed, "added": rng.normal(0, 1, n)})
    rep = compare_profiles(ref, cur).to_dict()
    got = signals(rep)
    expected = {
        ("missing_rate_jump", "miss"), ("out_of_range", "rng"), ("constant", "const"),
        ("new_categories", "city"), ("missing_column", "gone"), ("type_change", "kind"),
        ("inf_values", "inf"), ("invalid_values", "typed"), ("new_column", "added"),
    }
    assert expected <= got
    # each signal only where it belongs
    assert {c for s, c in got if s == "missing_rate_jump"} == {"miss"}
    assert {c for s, c in got if s == "constant"} == {"const"}
    items = by_name(rep)
    assert items["gone"]["status"] == "missing_column" and items["kind"]["status"] == "type_change"
    assert rep["data_quality"]["counts"]["new_column"] == 1


def test_identical_profiles_have_zero_distance() -> None:
    rng = np.random.default_rng(7)
    p = prof({"x": rng.normal(0, 1, 10_000), "city": rng.choice(list("abc"), 10_000)})
    rep = compare_profiles(p, p.copy()).to_dict()
    for f in rep["features"]:
        assert not f["drift_detected"]
        for k in ("ks", "psi", "jensen_shannon", "tvd", "wasserstein"):
            if f["scores"].get(k) is not None:
                assert f["scores"][k] == pytest.approx(0.0, abs=1e-6)


def test_drift_cli_json_and_table(tmp_path, capsys) -> None:
    rng = np.random.default_rng(8)
    ref = prof({"a": rng.normal(0, 1, 3000), "city": rng.choice(list("ab"), 3000)}, {"score": rng.random(3000)})
    write_profile_file(tmp_path / "ref.dlp", ref)
    rows = [f"{x},{c},{s}" for x, c, s in zip(rng.normal(1, 1, 1000), rng.choice(list("ab"), 1000),
                                              rng.random(1000), strict=True)]
    (tmp_path / "cur.csv").write_text("a,city,score\n" + "\n".join(rows) + "\n")
    assert main(["drift", str(tmp_path / "ref.dlp"), str(tmp_path / "cur.csv"), "--output", "score",
                 "--categorical", "city", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep) >= {"dataset_drift", "drift_share", "features", "outputs"}
    items = by_name(rep)
    assert items["a"]["drift_detected"] and not items["city"]["drift_detected"]
    assert {"ks", "psi", "jensen_shannon", "wasserstein", "hellinger", "ks_p_value"} <= set(items["a"]["scores"])
    assert {"chi2_p_value", "tvd"} <= set(items["city"]["scores"])
    assert [o["name"] for o in rep["outputs"]] == ["score"]
    assert main(["drift", str(tmp_path / "ref.dlp"), str(tmp_path / "cur.csv"), "--output", "score"]) == 0
    assert "dataset drift" in capsys.readouterr().out
    assert main(["drift", str(tmp_path / "ref.dlp"), str(tmp_path / "nope.csv")]) == 2
