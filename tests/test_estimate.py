"""The label-free performance estimate (driftline/estimate.py): calibration, estimates, bands, storage, CLI."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from driftline.apps.cli.main import main as cli
from driftline.columns import NumericColumn
from driftline.errors import WireFormatError
from driftline.estimate import (
    METRICS,
    Calibration,
    CalibrationBuilder,
    EstimateError,
    estimate_from_scores,
    estimate_performance,
    realised_performance,
)
from driftline.profile import StreamKey, WindowProfile
from driftline.wire import decode_profile, encode_profile, read_profile_file
from driftline.wirecheck import check_body
from tests.estimate_cases import THRESHOLD, draw


def calibrate(d: dict[str, np.ndarray], bins: int = 64) -> Calibration:
    col = NumericColumn()
    col.update_array(d["score"])
    return CalibrationBuilder.from_column("score", col, bins, threshold=THRESHOLD).update(d["score"], d["y"]).fit()


def sketched(scores: np.ndarray) -> NumericColumn:
    col = NumericColumn()
    col.update_array(scores)
    return col


# ---- calibration ----------------------------------------------------------------------------------
def test_isotonic_calibration_is_monotone_bounded_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    cal = calibrate(draw(rng, 20_000))
    assert len(cal.x) <= 64 and all(b >= a for a, b in zip(cal.p, cal.p[1:], strict=False))
    assert cal.rows == 20_000 and sum(cal.block_rows) == 20_000
    assert Calibration.from_dict(cal.to_dict()) == cal
    # the map recovers P(y | score): score = σ(0.6 logit + 0.3), so P = σ((logit(s) − 0.3) / 0.6)
    s = np.array([0.2, 0.4, 0.5, 0.6, 0.8])
    truth = 1 / (1 + np.exp(-((np.log(s / (1 - s)) - 0.3) / 0.6)))
    assert np.max(np.abs(cal(s) - truth)) < 0.04
    # labels as text, booleans and floats are the same labels
    d = draw(rng, 2000)
    col = sketched(d["score"])
    as_text = CalibrationBuilder.from_column("score", col, 16).update(d["score"], d["y"].astype(str))
    as_bool = CalibrationBuilder.from_column("score", col, 16).update(d["score"], d["y"] == 1)
    assert as_text.fit() == as_bool.fit()


def test_bad_calibrations_and_inputs_are_refused_by_name() -> None:
    good = calibrate(draw(np.random.default_rng(1), 3000)).to_dict()
    for change, words in (({"version": 9}, "version"), ({"p": list(reversed(good["p"]))}, "non-decreasing"),
                          ({"x": good["x"][:-1]}, "knots"), ({"block": [99] * len(good["x"])}, "blocks"),
                          ({"threshold": float("nan")}, "threshold"), ({"x": "abc"}, "malformed")):
        with pytest.raises(EstimateError, match=words):
            Calibration.from_dict({**good, **change})
    with pytest.raises(EstimateError, match="at least 30"):
        CalibrationBuilder("score", np.array([0.5])).update([0.1, 0.9], [0, 1]).fit()
    b = CalibrationBuilder("score", np.array([0.5])).update([0.1, np.nan, 0.7, 0.9], [0, 1, None, 1])
    assert b.skipped == 2 and int(b.rows.sum()) == 2


def test_the_calibration_travels_with_the_reference_and_is_checked_on_the_wire() -> None:
    rng = np.random.default_rng(2)
    d = draw(rng, 5000)
    ref = WindowProfile(StreamKey.of("m", "v1", "reference", "training"), 0.0, 0.0)
    ref.update({"x0": d["x0"], "x1": d["x1"]}, {"score": d["score"]})
    ref.calibration = calibrate(d).to_dict()
    back = decode_profile(encode_profile(ref), instant_ok=True)
    assert back.calibration == ref.calibration
    assert Calibration.from_dict(back.calibration) == Calibration.from_dict(ref.calibration)
    plain = WindowProfile.from_dict({k: v for k, v in ref.to_dict().items() if k != "calibration"})
    assert plain.calibration is None  # old references read as before
    assert ref.merge(ref).calibration == ref.calibration and ref.merge(plain).calibration is None
    for bad in ({**ref.calibration, "p": [2.0] * len(ref.calibration["p"])}, {**ref.calibration, "x": [0.1] * 300},
                {**ref.calibration, "output": ""}):
        hostile = ref.copy()
        hostile.calibration = bad
        with pytest.raises(WireFormatError, match="calibration"):
            decode_profile(encode_profile(hostile), instant_ok=True)
    with pytest.raises(WireFormatError, match="calibration is str, expected a map"):
        check_body({"profiles": [{**ref.to_dict(), "calibration": "not a map"}]}, instant_ok=True)


# ---- estimates ------------------------------------------------------------------------------------
def test_the_band_covers_the_realised_performance_under_covariate_shift() -> None:
    """40 seeded draws: a fresh 20,000-row labelled reference, then a 3,000-row window with x moved
    (mean +0.7 and spread x1.3): P(y|x) is fixed, so P(y|score) is. Coverage per metric >= 95%."""
    covered = dict.fromkeys(METRICS, 0)
    closer = dict.fromkeys(METRICS, 0)
    widths = {m: [] for m in METRICS}
    draws = 40
    for seed in range(draws):
        rng = np.random.default_rng(1000 + seed)
        ref = draw(rng, 20_000)
        cal = calibrate(ref)
        before = realised_performance(ref["score"], ref["y"], THRESHOLD)
        cur = draw(rng, 3000, shift=0.7, scale=1.3)
        real = realised_performance(cur["score"], cur["y"], THRESHOLD)
        est = estimate_performance(cal, sketched(cur["score"]))
        assert est.status == "ok" and est.rows == 3000 and est.rank_error > 0
        for m in METRICS:
            e = est.metric(m)
            covered[m] += e.covers(real[m])
            closer[m] += abs(e.value - real[m]) < abs(before[m] - real[m])
            widths[m].append(e.upper - e.lower)
    assert all(covered[m] >= 0.95 * draws for m in METRICS), covered
    # informative, not just wide: closer to the truth than "same as on the reference" on most draws
    assert all(closer[m] >= 0.75 * draws for m in ("accuracy", "precision", "f1", "roc_auc")), closer
    assert np.mean(widths["accuracy"]) < 0.08 and np.mean(widths["roc_auc"]) < 0.2, widths


def test_without_sketch_noise_the_sampling_error_is_the_measured_spread() -> None:
    """On raw scores (rank error 0) the band is z·sd; the sd predicts the spread of the errors."""
    rng = np.random.default_rng(7)
    cal = calibrate(draw(rng, 50_000))
    errs = {m: [] for m in METRICS}
    sds = {m: [] for m in METRICS}
    for _ in range(60):
        cur = draw(rng, 2000, shift=0.5)
        est = estimate_from_scores(cal, cur["score"], np.ones(2000))
        real = realised_performance(cur["score"], cur["y"], THRESHOLD)
        for m in METRICS:
            e = est.metric(m)
            assert e.rank_bound == 0.0
            errs[m].append(e.value - real[m])
            sds[m].append(math.hypot(e.sampling_sd, e.calibration_sd))
    for m in METRICS:
        ratio = np.std(errs[m]) / np.mean(sds[m])
        assert 0.6 < ratio < 1.4, (m, ratio)


def test_sketch_and_raw_estimates_differ_by_less_than_the_rank_bound() -> None:
    rng = np.random.default_rng(3)
    cal = calibrate(draw(rng, 20_000))
    cur = draw(rng, 100_000, shift=0.4)
    exact = estimate_from_scores(cal, cur["score"], np.ones(cur["score"].size))
    est = estimate_performance(cal, sketched(cur["score"]))
    for m in METRICS:
        assert abs(est.metric(m).value - exact.metric(m).value) <= est.metric(m).rank_bound, m


def test_concept_shift_breaks_the_estimate_the_known_limitation() -> None:
    """P(y|x) moved (+1.5 on the true logit) with the scores unchanged: the estimate cannot see it."""
    misses = 0
    for seed in range(10):
        rng = np.random.default_rng(2000 + seed)
        cal = calibrate(draw(rng, 20_000))
        cur = draw(rng, 3000, concept=1.5)
        real = realised_performance(cur["score"], cur["y"], THRESHOLD)
        est = estimate_performance(cal, sketched(cur["score"]))
        misses += not est.metric("precision").covers(real["precision"])
    assert misses >= 9


def test_small_and_one_sided_windows() -> None:
    cal = calibrate(draw(np.random.default_rng(4), 5000))
    small = estimate_performance(cal, sketched(np.array([0.9] * 10)))
    assert small.status == "insufficient_data" and all(m.value is None for m in small.metrics)
    assert estimate_performance(cal, NumericColumn()).status == "insufficient_data"
    low = estimate_performance(cal, sketched(np.full(500, 0.05)))  # nothing predicted positive
    assert low.metric("precision").value is None and low.metric("accuracy").value > 0.9
    assert low.to_dict()["metrics"]["precision"] == {k: None for k in low.to_dict()["metrics"]["precision"]}


# ---- the command ----------------------------------------------------------------------------------
def _write_csv(path, d: dict[str, np.ndarray]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(d))
        w.writerows(zip(*(d[k].tolist() for k in d), strict=True))


def test_reference_build_with_a_label_stores_the_calibration(tmp_path, capsys) -> None:
    d = draw(np.random.default_rng(5), 4000)
    _write_csv(tmp_path / "train.csv", d)
    out = tmp_path / "ref.dlp"
    assert cli(["reference", "build", str(tmp_path / "train.csv"), "--model", "m", "--version", "v1",
                "--output", "score", "--label", "y", "--out", str(out)]) == 0
    assert "calibration of 'score' on 4000 labelled rows" in capsys.readouterr().out
    prof = read_profile_file(out)
    assert set(prof.features) == {"x0", "x1"} and prof.calibration is not None  # the label is no feature
    assert Calibration.from_dict(prof.calibration).rows == 4000
    assert cli(["reference", "build", str(tmp_path / "train.csv"), "--model", "m", "--version", "v1",
                "--output", "score", "--out", str(tmp_path / "plain.dlp")]) == 0
    assert read_profile_file(tmp_path / "plain.dlp").calibration is None  # optional: nothing changes without it
    assert cli(["reference", "build", str(tmp_path / "train.csv"), "--model", "m", "--version", "v1",
                "--output", "score", "--label", "nope", "--out", str(tmp_path / "x.dlp")]) != 0
    assert "label column 'nope' not found" in capsys.readouterr().err
    assert cli(["reference", "build", str(tmp_path / "train.csv"), "--model", "m", "--version", "v1",
                "--label", "y", "--out", str(tmp_path / "x.dlp")]) != 0
    assert "--label needs --score" in capsys.readouterr().err
