"""The performance summary and the label joiner (pure core): exact metrics, the AUC bound, merge laws."""

from __future__ import annotations

import uuid
import zlib

import msgpack
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from driftline.errors import LabelError, PerformanceError, WireFormatError
from driftline.labeljoin import LabelJoiner
from driftline.performance import PerformanceSummary, merge_summaries
from driftline.profile import StreamKey, WindowProfile
from driftline.wire import HEADER, MAGIC, Envelope, decode_envelope, encode_envelope


def _draw(rng: np.random.Generator, n: int, shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    y = (rng.random(n) < 0.3).astype(np.float64)
    z = rng.normal(shift * y, 1.0)
    return 1.0 / (1.0 + np.exp(-z)), y


def _ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    b = np.minimum((p * bins).astype(int), bins - 1)
    return sum(abs(y[b == i].sum() - p[b == i].sum()) for i in range(bins)) / len(p)


def test_binary_metrics_are_exact_against_sklearn() -> None:
    p, y = _draw(np.random.default_rng(1), 5000)
    r = PerformanceSummary(threshold=0.4).update(p, y).result()
    pred = (p >= 0.4).astype(int)
    assert r.labelled == 5000 and r.positives == int(y.sum())
    assert r.accuracy == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert r.precision == pytest.approx(precision_score(y, pred), abs=1e-12)
    assert r.recall == pytest.approx(recall_score(y, pred), abs=1e-12)
    assert r.f1 == pytest.approx(f1_score(y, pred), abs=1e-12)
    assert r.ece == pytest.approx(_ece(p, y), abs=1e-9)


def test_small_windows_give_the_exact_auc() -> None:
    p, y = _draw(np.random.default_rng(2), 150)
    p = np.round(p, 2)  # ties count one half, as in sklearn
    r = PerformanceSummary().update(p, y).result()
    assert r.roc_auc_error_bound == 0.0
    assert r.roc_auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_auc_error_stays_within_the_documented_bound_over_seeded_draws() -> None:
    worst = 0.0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        p, y = _draw(rng, 20_000, shift=rng.uniform(0.2, 2.0))
        # fold in chunks and merge, as windows from many devices would
        parts = [PerformanceSummary().update(p[i:i + 4000], y[i:i + 4000]) for i in range(0, len(p), 4000)]
        r = merge_summaries(parts).result()
        err = abs(r.roc_auc - roc_auc_score(y, p))
        assert r.roc_auc_error_bound > 0 and err <= r.roc_auc_error_bound, (seed, err)
        worst = max(worst, err / r.roc_auc_error_bound)
    assert worst < 1.0


def test_regression_mae_rmse_exact() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(10, 3, 1000)
    p = y + rng.normal(0, 1, 1000)
    r = PerformanceSummary("regression").update(p, y).result()
    assert r.mae == pytest.approx(np.mean(np.abs(p - y)), rel=1e-12)
    assert r.rmse == pytest.approx(np.sqrt(np.mean((p - y) ** 2)), rel=1e-12)
    back = PerformanceSummary.from_dict(PerformanceSummary("regression").update(p, y).to_dict())
    assert back.result() == r


def test_merge_laws_and_round_trip() -> None:
    rng = np.random.default_rng(4)
    a, b, c = (PerformanceSummary().update(*_draw(rng, 300)) for _ in range(3))
    ab_c = a.merge(b).merge(c)
    a_bc = a.merge(b.merge(c))
    assert ab_c.labelled == a_bc.labelled == 900
    assert (ab_c.tp, ab_c.fp, ab_c.tn, ab_c.fn) == (a_bc.tp, a_bc.fp, a_bc.tn, a_bc.fn)
    assert ab_c.result().ece == pytest.approx(a_bc.result().ece, abs=1e-12)
    assert a.merge(b).result().accuracy == b.merge(a).result().accuracy
    assert PerformanceSummary.from_dict(ab_c.to_dict()) == ab_c
    with pytest.raises(PerformanceError):
        a.merge(PerformanceSummary(threshold=0.7))


def test_bad_labels_and_hostile_dicts_are_typed_errors() -> None:
    s = PerformanceSummary()
    for p, y in (([0.5], [2]), ([1.5], [1]), ([0.5], [float("nan")]), ([0.5], ["x"]), ([0.1, 0.2], [1])):
        with pytest.raises(LabelError):
            s.update(p, y)
    assert s.labelled == 0
    good = PerformanceSummary().update([0.2, 0.9], [0, 1]).to_dict()
    for bad in ({**good, "tp": -1}, {**good, "pos": b"junk"}, {**good, "cal_n": [1] * 10}, {**good, "task": "x"},
                {**good, "tp": 5}, {}, {**good, "cal_score": ["a"] * 10}, {**good, "k": 3}):
        with pytest.raises(PerformanceError):
            PerformanceSummary.from_dict(bad)


def test_a_profile_carries_its_summary_through_the_wire_and_merges_it() -> None:
    key = StreamKey.of("m", "1", cohort={"region": "eu"})
    w = WindowProfile(key, 60.0, 120.0)
    w.performance = PerformanceSummary().update([0.2, 0.9, 0.7], [0, 1, 0])
    env = decode_envelope(encode_envelope(Envelope([w])))
    back = env.profiles[0]
    assert back.rows == 0 and back.performance == w.performance
    other = WindowProfile(key, 60.0, 120.0)
    other.update({"x": [1.0, 2.0]})
    merged = other.merge(back)
    assert merged.rows == 2 and merged.performance.labelled == 3
    for bad in ({**w.performance.to_dict(), "fn": 2**60}, {**w.performance.to_dict(), "fn": 9},
                {**w.performance.to_dict(), "task": "ranking"}, "junk"):
        hostile = {**w.to_dict(), "performance": bad}
        body = zlib.compress(msgpack.packb({"producer": {}, "created_at": 0.0, "profiles": [hostile]},
                                           use_bin_type=True), 1)
        frame = HEADER.pack(MAGIC, 2, 0, 1, uuid.uuid4().bytes, len(body), zlib.crc32(body))
        with pytest.raises(WireFormatError, match="(?i)performance"):
            decode_envelope(frame + body)


def test_joiner_joins_into_the_window_of_the_prediction() -> None:
    j = LabelJoiner(horizon_seconds=100, max_pending=1000)
    ka, kb = StreamKey.of("m", "1", cohort={"c": "a"}), StreamKey.of("m", "1", cohort={"c": "b"})
    j.add_many(["a1", "a2", "a3"], ka, 0.0, [0.9, 0.2, 0.6], now=10)
    j.add_many(["b1", 7], kb, 60.0, [0.4, 0.8], now=70)
    assert j.label_many(["a1", "b1", "zz", 7], [1, 0, 1, 1], now=80) == 3
    assert not j.label("a1", 1, now=81)  # already joined: the first label wins
    out = {(k, s): summ for k, s, summ in j.take()}
    assert out[(ka, 0.0)].labelled == 1 and out[(kb, 60.0)].labelled == 2
    assert j.counts["unknown"] == 2 and j.pending == 2
    assert j.expire(now=115) == 2  # a2, a3 stamped at 10: past the 100 s horizon
    assert not j.label("a2", 0, now=116) and j.take() == []
    with pytest.raises(LabelError):
        j.label_many(["a3"], [3], now=117)
    with pytest.raises(LabelError):
        j.label_many([1.5], [1], now=117)
    with pytest.raises(LabelError):
        j.add("x", ka, 0.0, 1.5, now=118)
    assert j.counts["rejected"] == 2


def test_joiner_memory_is_bounded_by_the_ring() -> None:
    j = LabelJoiner(horizon_seconds=1e9, max_pending=100)
    key = StreamKey.of("m", "1")
    for w in range(50):
        j.add_many([f"{w}-{i}" for i in range(10)], key, float(w * 60), np.full(10, 0.5), now=float(w))
    assert j.pending == 100 and j.counts["evicted"] == 400
    assert j.label_many([f"49-{i}" for i in range(10)] + ["0-0"], [1] * 11, now=60.0) == 10
    j.take()
    assert len(j._group_keys) <= 64 or len(j._group_keys) <= 10
    j.add("49-0", key, 2940.0, 0.1, now=61)
    j.add("49-0", key, 2940.0, 0.9, now=62)
    assert j.counts["replaced"] == 1 and j.label("49-0", 1, now=63)
    assert j.take()[0][2].tp == 1


def test_one_label_at_a_time_equals_the_batch_join() -> None:
    rng = np.random.default_rng(5)
    key = StreamKey.of("m", "1")
    p, y = _draw(rng, 10_000)
    ids = [f"i{i}" for i in range(10_000)]
    one, many = LabelJoiner(max_pending=20_000), LabelJoiner(max_pending=20_000)
    for j in (one, many):
        j.add_many(ids[:5000], key, 0.0, p[:5000], now=1.0)
        j.add_many(ids[5000:], key, 60.0, p[5000:], now=2.0)
    assert all(one.label(i, int(v), now=3.0) for i, v in zip(ids, y, strict=True))
    assert many.label_many(ids, y, now=3.0) == 10_000
    a, b = one.take(), many.take()
    assert [s for _, s, _ in a] == [s for _, s, _ in b] == [0.0, 60.0]
    for (_, _, x), (_, _, z) in zip(a, b, strict=True):  # KLL compaction is randomised: compare results
        rx, rz = x.result(), z.result()
        assert (rx.labelled, rx.accuracy, rx.f1, rx.ece) == (rz.labelled, rz.accuracy, rz.f1, rz.ece)
        assert abs(rx.roc_auc - rz.roc_auc) <= rx.roc_auc_error_bound + rz.roc_auc_error_bound
    with pytest.raises(LabelError):
        one.label("i1", "yes", now=4.0)
    with pytest.raises(LabelError):
        one.label(None, 1, now=4.0)
    assert one.counts["rejected"] == 2 and one.counts["joined"] == 10_000
