"""Golden-set conformance, the pure core: the comparison against numpy computed by hand, the file
format's round trip and refusals, and the envelope's ``conformance`` key."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest

from driftline.conformance import (
    MAX_CONFORMANCE_ENTRIES,
    GoldenSet,
    Tolerances,
    check_conformance_entries,
    compare,
    decode_golden,
    encode_golden,
    ks_statistic,
    read_golden_file,
    write_golden_file,
)
from driftline.errors import DataFileError, GoldenSetError, WireFormatError
from driftline.profile import StreamKey, WindowProfile
from driftline.wire import Envelope, decode_envelope, encode_envelope


def golden(rng: np.random.Generator, n: int = 200, **kw: object) -> GoldenSet:
    x = rng.normal(size=(n, 6)).astype(np.float32)
    logits = rng.normal(size=(n, 4))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    label = np.array([f"c{i}" for i in proba.argmax(axis=1)], dtype=object)
    return GoldenSet("digits", "v1", {"pixels": x}, {"proba": proba, "label": label}, **kw)  # type: ignore[arg-type]


def ks_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """sup |F_a - F_b| evaluated at every sample point with plain loops (the definition)."""
    best = 0.0
    for x in np.concatenate([a, b]):
        best = max(best, abs(np.count_nonzero(a <= x) / len(a) - np.count_nonzero(b <= x) / len(b)))
    return best


def test_identical_outputs_pass_with_zero_differences() -> None:
    g = golden(np.random.default_rng(0))
    r = compare(g, {"proba": g.outputs["proba"].copy(), "label": np.array(list(g.outputs["label"]))})
    assert r.passed and r.reasons == ()
    assert (r.cases, r.max_abs_diff, r.max_rel_diff, r.mismatched_values, r.top1_agreement, r.score_ks) == (
        200, 0.0, 0.0, 0, 1.0, 0.0)


def test_differences_match_numpy_exactly() -> None:
    rng = np.random.default_rng(1)
    g = golden(rng, tolerances=Tolerances(atol=1e-3, rtol=1e-2, min_top1_agreement=0.9, max_score_ks=0.2))
    e = g.outputs["proba"]
    a = e + rng.normal(0, 2e-3, e.shape)
    a[5, :] = a[5, ::-1]  # one case whose top-1 may move
    r = compare(g, {"proba": a, "label": g.outputs["label"]})
    diff = np.abs(a - e)
    assert r.max_abs_diff == float(diff.max())
    assert r.max_rel_diff == float((diff / np.abs(e)).max())
    assert r.mismatched_values == int(np.count_nonzero(diff > 1e-3 + 1e-2 * np.abs(e)))
    assert r.top1_agreement == float(np.mean(a.argmax(axis=1) == e.argmax(axis=1)))
    assert r.score_ks == pytest.approx(ks_by_hand(e.ravel(), a.ravel()), abs=1e-12)
    assert not r.passed and any("values outside" in why for why in r.reasons)


def test_ks_statistic_is_the_definition_and_scipys() -> None:
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(2)
    for _ in range(5):
        a, b = rng.normal(size=int(rng.integers(5, 80))), rng.normal(0.3, 1.2, size=int(rng.integers(5, 80)))
        b[:3] = a[:3]  # ties across the samples
        assert ks_statistic(a, b) == pytest.approx(ks_by_hand(a, b), abs=1e-12)
        assert ks_statistic(a, b) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)


def test_quantised_input_fails_on_top1_and_ks_thresholds() -> None:
    rng = np.random.default_rng(3)
    g = golden(rng, tolerances=Tolerances(atol=1.0, rtol=0.0, min_top1_agreement=0.99, max_score_ks=0.01))
    a = np.round(g.outputs["proba"] * 4) / 4  # values within atol, but coarse
    r = compare(g, {"proba": a, "label": g.outputs["label"]})
    assert r.mismatched_values == 0
    assert r.top1_agreement == float(np.mean(a.argmax(axis=1) == g.outputs["proba"].argmax(axis=1)))
    assert r.score_ks is not None and r.score_ks > 0.01
    assert not r.passed and any("score KS" in why for why in r.reasons)


def test_shape_dtype_and_missing_outputs_fail_and_are_named() -> None:
    g = golden(np.random.default_rng(4))
    e = g.outputs["proba"]
    r = compare(g, {"proba": e.astype(np.float32)})
    assert r.dtype_mismatches == ("proba",) and r.missing_outputs == ("label",) and not r.passed
    assert r.max_abs_diff == float(np.abs(e.astype(np.float32).astype(np.float64) - e).max())
    r = compare(g, {"proba": e[:, :3], "label": g.outputs["label"]})
    assert r.shape_mismatches == ("proba",) and r.top1_agreement is None and r.score_ks is None
    entry = r.to_wire(g, trigger="start", evaluated_at=1.0)
    assert entry["shape_mismatches"] == 1 and entry["passed"] is False


def test_nan_only_on_one_side_is_an_infinite_difference() -> None:
    g = GoldenSet("m", "v", {"x": np.zeros((3, 1))}, {"y": np.array([1.0, np.nan, 0.0])})
    assert compare(g, {"y": np.array([1.0, np.nan, 0.0])}).passed  # NaN where the cloud has NaN
    r = compare(g, {"y": np.array([np.nan, np.nan, 0.0])})
    assert not r.passed and math.isinf(r.max_abs_diff) and r.mismatched_values == 1


def test_labels_compare_by_equality_for_top1() -> None:
    g = GoldenSet("m", "v", {"x": np.zeros((4, 2))}, {"label": np.array([1, 2, 3, 4])})
    r = compare(g, {"label": np.array([1, 2, 0, 4])})
    assert r.top1_agreement == 0.75 and r.score_ks is None and r.mismatched_values == 1


def test_file_round_trip(tmp_path) -> None:
    g = golden(np.random.default_rng(5), tolerances=Tolerances(atol=0.5), name="set-a", top1_output="proba",
               created_at=12.5)
    size = write_golden_file(tmp_path / "g.dlg", g)
    back = read_golden_file(tmp_path / "g.dlg")
    assert size == (tmp_path / "g.dlg").stat().st_size
    assert (back.model, back.model_version, back.name, back.tolerances, back.top1_output, back.created_at) == (
        "digits", "v1", "set-a", Tolerances(atol=0.5), "proba", 12.5)
    assert back.inputs["pixels"].dtype == np.float32 and np.array_equal(back.inputs["pixels"], g.inputs["pixels"])
    assert np.array_equal(back.outputs["proba"], g.outputs["proba"])
    assert list(back.outputs["label"]) == list(g.outputs["label"])
    assert back.digest == g.digest and encode_golden(back) == encode_golden(g)


def _doc(g: GoldenSet) -> dict:
    return msgpack.unpackb(encode_golden(g), raw=False)


@pytest.mark.parametrize("case", ["garbage", "format", "version", "dtype", "bytes", "cases", "tolerance",
                                  "shape", "top1"])
def test_bad_files_are_refused_with_a_typed_error(case: str, tmp_path) -> None:
    g = golden(np.random.default_rng(6), n=10)
    doc = _doc(g)
    if case == "garbage":
        data = b"\xc1not msgpack"
    else:
        if case == "format":
            doc["format"] = "other"
        elif case == "version":
            doc["version"] = 2
        elif case == "dtype":
            doc["inputs"][0]["dtype"] = "complex128"
        elif case == "bytes":
            doc["inputs"][0]["data"] = doc["inputs"][0]["data"][:-4]
        elif case == "cases":
            doc["outputs"][0]["shape"] = [9, 4]
            doc["outputs"][0]["data"] = doc["outputs"][0]["data"][: 9 * 4 * 8]
        elif case == "tolerance":
            doc["tolerances"]["atol"] = -1.0
        elif case == "shape":
            doc["inputs"][0]["shape"] = "10x6"
        elif case == "top1":
            doc["top1_output"] = "nope"
        data = msgpack.packb(doc, use_bin_type=True)
    with pytest.raises(GoldenSetError):
        decode_golden(data)
    (tmp_path / "bad.dlg").write_bytes(data)
    with pytest.raises(DataFileError, match="bad.dlg"):  # GoldenSetError is a DataFileError: the CLI's one line
        read_golden_file(tmp_path / "bad.dlg")


def test_envelope_carries_conformance_and_old_envelopes_keep_their_bytes() -> None:
    g = golden(np.random.default_rng(7), n=20)
    prof = WindowProfile(StreamKey.of("digits", "v1", source="cam-1"), 0.0, 60.0)
    prof.update({"a": np.arange(5.0)})
    plain = Envelope([prof], producer={"device": "cam-1"}, envelope_id="6f1c1b4e-8a5d-4d5e-9d5f-0c7c0f2d7b11",
                     created_at=1.0)
    before = encode_envelope(plain)
    assert b"conformance" not in before
    assert decode_envelope(before).conformance == []
    entry = compare(g, g.outputs).to_wire(g, trigger="start", evaluated_at=5.0, cohort={"driver": "d2"})
    entry["unknown_key"] = 1
    plain.conformance = [entry]
    back = decode_envelope(encode_envelope(plain))
    assert back.conformance[0]["passed"] is True and back.conformance[0]["cohort"] == [["driver", "d2"]]
    assert "unknown_key" not in back.conformance[0] and back.conformance[0]["digest"] == g.digest


@pytest.mark.parametrize("mutate", [
    lambda e: e.update(trigger="whenever"),
    lambda e: e.update(passed="yes"),
    lambda e: e.update(max_abs_diff=float("nan")),
    lambda e: e.update(top1_agreement=1.5),
    lambda e: e.update(cases=-1),
    lambda e: e.update(model="m\x00"),
    lambda e: e.update(cohort=[["a"]]),
    lambda e: e.update(evaluated_at=float("inf")),
    lambda e: e.update(**{f"k{i}": i for i in range(40)}),
])
def test_hostile_conformance_entries_are_refused(mutate) -> None:
    g = golden(np.random.default_rng(8), n=5)
    entry = compare(g, g.outputs).to_wire(g, trigger="schedule", evaluated_at=5.0)
    assert check_conformance_entries([dict(entry)])
    mutate(entry)
    with pytest.raises(WireFormatError):
        check_conformance_entries([entry])


def test_too_many_entries_refuse_the_envelope() -> None:
    g = golden(np.random.default_rng(9), n=5)
    entry = compare(g, g.outputs).to_wire(g, trigger="schedule", evaluated_at=5.0)
    prof = WindowProfile(StreamKey.of("digits", "v1", source="cam-1"), 0.0, 60.0)
    env = Envelope([prof], conformance=[entry] * (MAX_CONFORMANCE_ENTRIES + 1))
    with pytest.raises(WireFormatError, match="conformance"):
        decode_envelope(encode_envelope(env))


def test_golden_set_rejects_inconsistent_cases() -> None:
    with pytest.raises(GoldenSetError, match="first dimension"):
        GoldenSet("m", "v", {"x": np.zeros((3, 2))}, {"y": np.zeros(4)})
    with pytest.raises(GoldenSetError):
        GoldenSet("m", "", {"x": np.zeros((3, 2))}, {"y": np.zeros(3)})
