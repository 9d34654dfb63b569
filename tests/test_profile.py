"""Window profiles: updates from every container, exact totals, and merge laws (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.columns import CategoricalColumn, NumericColumn
from driftline.errors import BatchError, ProfileError, SchemaConflictError
from driftline.profile import ANY, ProfileConfig, StreamKey, WindowProfile, merge_all

KEY = StreamKey.of("fraud", "v1", "baseline", "dev-1", {"site": "a"})


def new(cfg: ProfileConfig | None = None, key: StreamKey = KEY) -> WindowProfile:
    return WindowProfile(key, 0.0, 60.0, cfg or ProfileConfig())


def column_totals(p: WindowProfile) -> None:
    """Every column accounts for every profiled row exactly once."""
    for name, col in p.columns.items():
        assert col.rows == p.rows_profiled, name


def test_numeric_counts_missing_nan_inf_exactly() -> None:
    p = new()
    p.update({"x": [1.0, None, float("nan"), float("inf"), -float("inf"), 3.0, "bad"]})
    col = p.features["x"]
    assert isinstance(col, NumericColumn)
    assert (col.count, col.missing, col.nan, col.inf, col.invalid) == (2, 1, 1, 2, 1)
    assert col.min == 1.0 and col.max == 3.0 and col.sum == 4.0
    column_totals(p)


def test_update_from_2d_array_dict_rows_and_pandas_agree() -> None:
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 3))  # below k: the KLL sketch is exact, so all paths agree
    names = ["a", "b", "c"]
    p1 = new().update(x, feature_names=names)
    p2 = new().update({n: x[:, i] for i, n in enumerate(names)})
    p3 = new().update([{n: float(x[r, i]) for i, n in enumerate(names)} for r in range(150)])
    p4 = new().update(pd.DataFrame(x, columns=names))
    for p in (p2, p3, p4):
        for n in names:
            a, b = p1.features[n], p.features[n]
            assert isinstance(a, NumericColumn) and isinstance(b, NumericColumn)
            assert a.count == b.count == 150
            assert a.sum == pytest.approx(b.sum)
            assert np.allclose(a.quantiles([0.1, 0.5, 0.9]), b.quantiles([0.1, 0.5, 0.9]))


def test_single_row_dict_and_categorical_inference() -> None:
    p = new(ProfileConfig(categorical=frozenset({"label"})))
    p.update({"age": 31, "city": "Oslo"}, {"score": 0.7, "label": 1})
    assert isinstance(p.features["age"], NumericColumn)
    assert isinstance(p.features["city"], CategoricalColumn)
    assert isinstance(p.outputs["label"], CategoricalColumn)
    assert p.outputs["label"].frequencies() == {"1": 1}
    assert p.rows == 1


def test_columns_appearing_later_count_earlier_rows_as_absent() -> None:
    p = new()
    p.update({"a": [1.0, 2.0]})
    p.update({"a": [3.0], "b": ["x"]})
    assert p.features["b"].absent == 2
    p.update({"b": ["y", "z"]})
    assert p.features["a"].absent == 2
    column_totals(p)


def test_rows_observed_keeps_exact_totals_when_sampled() -> None:
    p = new().update({"a": [1.0, 2.0]}, rows_observed=20)
    assert p.rows == 20 and p.rows_profiled == 2


def test_bad_batches_raise_typed_errors() -> None:
    p = new()
    with pytest.raises(BatchError):
        p.update({"a": [1.0, 2.0], "b": [1.0]})
    with pytest.raises(BatchError):
        p.update(object())
    with pytest.raises(BatchError):
        p.update(np.zeros((2, 2, 2)))
    with pytest.raises(ProfileError):
        p.update({"a": [1.0]}, {"s": [1.0, 2.0]})


def test_runtime_and_reservoir() -> None:
    p = new(ProfileConfig(reservoir_size=5, seed=3))
    p.update({"a": np.arange(100.0)}, latency_ms=np.full(100, 4.0), errors=2)
    assert p.runtime is not None and p.runtime.errors == 2
    assert p.runtime.latency_quantile(0.99) == pytest.approx(4.0)
    assert p.reservoir is not None and p.reservoir.seen == 100 and len(p.reservoir.rows) == 5
    q = p.merge(p)
    assert q.reservoir is not None and q.reservoir.seen == 200 and len(q.reservoir.rows) == 5


def test_schema_conflict_on_merge_is_typed() -> None:
    a = new().update({"x": [1.0]})
    b = new().update({"x": ["s"]})
    with pytest.raises(SchemaConflictError, match="'x'"):
        a.merge(b)


def test_key_fields_that_differ_become_any() -> None:
    a = new(key=StreamKey.of("m", "v1", "baseline", "d1", {"site": "a", "hw": "x"}))
    b = new(key=StreamKey.of("m", "v1", "canary", "d2", {"site": "a", "hw": "y"}))
    k = a.merge(b).key
    assert (k.model, k.model_version, k.variant, k.source) == ("m", "v1", ANY, ANY)
    assert k.cohort_dict == {"site": "a"}


def test_config_validation() -> None:
    with pytest.raises(ProfileError):
        ProfileConfig(kll_k=2)


# ---- merge laws ------------------------------------------------------------------------------

values = st.lists(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True, width=32),
        st.none(),
        st.integers(-1000, 1000),
    ),
    min_size=0,
    max_size=30,
)
labels = st.lists(st.one_of(st.sampled_from(["a", "b", "c", "d"]), st.none()), max_size=30)


@st.composite
def profiles(draw: st.DrawFn) -> WindowProfile:
    p = new(ProfileConfig(kll_k=20, categorical=frozenset({"cat"})))
    for _ in range(draw(st.integers(0, 3))):
        cols: dict[str, list] = {}
        n = draw(st.integers(1, 20))
        if draw(st.booleans()):
            cols["num"] = draw(values.filter(lambda v: len(v) > 0))[:n]
            n = len(cols["num"])
        if draw(st.booleans()):
            lab = draw(labels)
            cols["cat"] = (lab * n)[:n] if lab else [None] * n
        if draw(st.booleans()):
            cols["other"] = [1.5] * n
        if not cols:
            cols["num"] = [0.0] * n
        p.update(cols, latency_ms=draw(st.floats(0, 100)) if draw(st.booleans()) else None)
    p.start = draw(st.floats(0, 1e6))
    p.end = p.start + 60
    return p


def exact_state(p: WindowProfile) -> dict:
    """The parts of a profile that must be exactly equal under any merge order."""
    out: dict = {"rows": p.rows, "rows_profiled": p.rows_profiled, "start": p.start, "end": p.end}
    for name, c in sorted(p.columns.items()):
        if isinstance(c, NumericColumn):
            out[name] = (c.count, c.missing, c.nan, c.inf, c.invalid, c.absent, c.min, c.max, c.kll.n)
        else:
            out[name] = (c.count, c.missing, c.invalid, c.absent, tuple(sorted(c.frequencies().items())))
    out["runtime"] = None if p.runtime is None else (p.runtime.errors, p.runtime.latency_ms.n)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profiles(), profiles(), profiles())
def test_merge_is_associative_and_commutative_with_exact_totals(a, b, c) -> None:
    ab_c = a.merge(b).merge(c)
    a_bc = a.merge(b.merge(c))
    ba = b.merge(a)
    assert exact_state(ab_c) == exact_state(a_bc)
    assert exact_state(a.merge(b)) == exact_state(ba)
    assert ab_c.rows == a.rows + b.rows + c.rows
    column_totals(ab_c)
    # sums are floating point: equal up to rounding, not bit-for-bit
    for name, col in ab_c.columns.items():
        if isinstance(col, NumericColumn) and col.count:
            other = a_bc.columns[name]
            assert isinstance(other, NumericColumn)
            assert math.isclose(col.sum, other.sum, rel_tol=1e-9, abs_tol=1e-6)
    # merging does not change its inputs
    assert exact_state(a) == exact_state(a.copy())


@settings(max_examples=50, deadline=None)
@given(profiles())
def test_dict_round_trip(p) -> None:
    q = WindowProfile.from_dict(p.to_dict())
    assert exact_state(q) == exact_state(p)
    assert q.to_dict() == p.to_dict()


def test_merge_all_quantiles_close_to_exact() -> None:
    rng = np.random.default_rng(7)
    parts = [rng.lognormal(size=20_000) for _ in range(8)]
    profs = [new().update({"x": part}) for part in parts]
    merged = merge_all(profs).features["x"]
    assert isinstance(merged, NumericColumn)
    allv = np.concatenate(parts)
    ranks = np.linspace(0.05, 0.95, 19)
    est = merged.quantiles(ranks)
    # rank of the estimated quantile within the true data is within the sketch's rank error
    true_ranks = np.searchsorted(np.sort(allv), est) / allv.size
    assert np.max(np.abs(true_ranks - ranks)) <= merged.rank_error + 1e-3
    assert merged.count == allv.size
    with pytest.raises(ProfileError):
        merge_all([])


def test_matrix_fast_path_equals_the_column_path() -> None:
    rng = np.random.default_rng(11)
    x = rng.lognormal(size=(5000, 4))
    names = ["a", "b", "c", "d"]
    fast = new().update(x, feature_names=names).update(x[:2000], feature_names=names)
    slow = new().update({n: x[:, i] for i, n in enumerate(names)}).update({n: x[:2000, i] for i, n in enumerate(names)})
    for n in names:
        a, b = fast.features[n], slow.features[n]
        assert isinstance(a, NumericColumn) and isinstance(b, NumericColumn)
        assert (a.count, a.min, a.max, a.kll.n) == (b.count, b.min, b.max, b.kll.n) == (7000, b.min, b.max, 7000)
        assert a.sum == pytest.approx(b.sum, rel=1e-12) and a.sumsq == pytest.approx(b.sumsq, rel=1e-12)
    # non-finite values or an extra existing column take the general path, with exact counts
    x[0, 0] = np.nan
    p = new().update({"e": [1.0] * 5000}).update(x, feature_names=names)
    assert p.features["a"].nan == 1 and p.features["e"].absent == 5000 and p.features["a"].absent == 5000
    column_totals(p)


def test_numeric_sketches_keep_float64_resolution() -> None:
    """1e7 + N(0, 0.25) shifted by 0.5 sd: float32 steps by 1 there and reported KS 0.044 for 0.196."""
    from driftline.stats import compare_profiles, exact_numeric_scores
    from driftline.stats.numeric import sketch_cdf

    rng = np.random.default_rng(11)
    ref = 1e7 + rng.normal(0, 0.25, size=50_000)
    cur = 1e7 + 0.125 + rng.normal(0, 0.25, size=50_000)
    pr = WindowProfile(StreamKey.of("m", "v"), 0, 1).update({"x": ref})
    pc = WindowProfile(StreamKey.of("m", "v"), 0, 1).update(cur.reshape(-1, 1), feature_names=["x"])  # matrix path
    exact = exact_numeric_scores(ref, cur)["ks"]
    item = compare_profiles(pr, pc).features[0]
    assert 0.18 < exact < 0.21
    assert abs(item.scores["ks"] - exact) < 0.02
    assert item.drift_detected
    # epoch milliseconds, one per second: every second stays its own value (float32: ~2-minute steps)
    ms = 1.7e12 + 1000.0 * np.arange(300)
    col = WindowProfile(StreamKey.of("m", "v"), 0, 1).update({"t": ms}).features["t"]
    assert np.array_equal(sketch_cdf(col).items, ms)
    assert col.quantiles([0.5])[0] in (ms[149], ms[150])  # a real second, not a 2-minute bucket
