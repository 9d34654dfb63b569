"""The in-process SDK: exact counts, every input shape, and never a raise into the caller's path."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.edge_sidecar.errors import ObserveError
from driftline.edge_sidecar.monitor import Monitor
from driftline.edge_sidecar.sampling import Sampler
from driftline.profile import WindowProfile


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def closed_profiles(m: Monitor) -> list[WindowProfile]:
    m.close()
    return [c.profile for c in m.take_closed()]


def total_rows(m: Monitor) -> int:
    return sum(p.rows for p in closed_profiles(m))


def test_single_rows_and_batches_of_every_shape_are_counted_exactly() -> None:
    import pandas as pd

    m = Monitor.configure(model="fraud", model_version="3", background=False, feature_names=["a", "b"])
    m.observe({"a": 1.0, "b": "x"}, {"score": 0.2}, request_id="r1", latency_ms=4.5)
    m.observe({"a": 2.0, "b": "y"}, 0.7)
    m.observe(np.array([3.0, 4.0]))
    m.observe(np.arange(20.0).reshape(10, 2), np.linspace(0, 1, 10), latency_ms=np.full(10, 2.0))
    m.observe({"a": np.arange(5.0), "b": ["p", "q", "r", "s", "t"]}, {"score": np.zeros(5)})
    m.observe([{"a": 1.0, "b": "u"}, {"a": 2.0}])
    m.observe(pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", None]}), pd.Series([0.1, 0.2, 0.3]))
    profiles = closed_profiles(m)
    assert [p.rows for p in profiles] == [1 + 1 + 1 + 10 + 5 + 2 + 3]
    p = profiles[0]
    assert p.rows_profiled == p.rows
    assert set(p.features) == {"a", "b"}
    assert set(p.outputs) == {"score", "prediction"}
    assert p.features["a"].count == 23 and p.features["b"].missing == 2  # None in the frame, key missing in a row
    assert p.runtime is not None and p.runtime.latency_ms.n == 11
    assert m.snapshot()["observed"] == {("fraud", "3", "default"): 23}
    assert m.snapshot()["windows_closed"] == {"shutdown": 1}


def test_sampling_thins_the_sketches_but_keeps_row_counts_exact() -> None:
    m = Monitor.configure(model="m", model_version="1", background=False, sampling_rate=0.1,
                          sampling_mode="request_id", sampling_seed=3)
    for i in range(3000):
        m.observe({"x": float(i)}, request_id=f"r{i}")
    m.observe(np.random.default_rng(0).normal(size=(5000, 3)), request_id=[f"b{i}" for i in range(5000)])
    m.observe(np.random.default_rng(1).normal(size=(700, 3)), request_id="one-request")
    profiles = closed_profiles(m)
    assert sum(p.rows for p in profiles) == 8700
    profiled = sum(p.rows_profiled for p in profiles)
    whole_request = 700 if Sampler(0.1, "request_id", seed=3).keep("one-request") else 0  # all or nothing
    assert 600 < profiled - whole_request < 1000  # about 10% of the other 8000
    assert m.snapshot()["observed"][("m", "1", "default")] == 8700


def test_rows_split_by_stream_variant_device_and_cohort() -> None:
    m = Monitor.configure(background=False, device="dev-1", cohort={"site": "oslo"})
    m.observe({"x": 1.0}, model="a", model_version="1", variant="canary")
    m.observe({"x": 1.0}, model="a", model_version="1", variant="baseline")
    m.observe({"x": 1.0}, model="a", model_version="1", variant="baseline", cohort={"hw": "orin"})
    m.observe({"x": np.ones(4)}, model="b", model_version=2)
    keys = sorted((p.key.model, p.key.model_version, p.key.variant, p.key.source, p.key.cohort, p.rows)
                  for p in closed_profiles(m))
    assert keys == [
        ("a", "1", "baseline", "dev-1", (("hw", "orin"), ("site", "oslo")), 1),
        ("a", "1", "baseline", "dev-1", (("site", "oslo"),), 1),
        ("a", "1", "canary", "dev-1", (("site", "oslo"),), 1),
        ("b", "2", "default", "dev-1", (("site", "oslo"),), 4),
    ]


def test_event_time_routes_rows_to_their_windows_and_counts_late_ones() -> None:
    t0 = 1_699_999_980.0  # start of the window that holds "now"
    clock = Clock(t0 + 5)
    m = Monitor.configure(model="m", model_version="1", background=False, window_seconds=60, lateness_seconds=10,
                          clock=clock)
    m.observe({"x": 1.0}, event_time=t0 - 30)  # previous window, still within the allowance (t0 + 10 > now)
    m.observe({"x": np.ones(3)}, event_time=[t0 - 120, t0 + 5, "2001-01-01T00:00:00"])  # late, now, late
    m.tick()
    snap = m.snapshot()
    assert snap["late_rows"] == 2
    clock.t += 100
    m.tick()
    windows = sorted((c.profile.start, c.profile.rows, c.reason) for c in m.take_closed())
    assert windows == [(t0 - 60, 1, "time"), (t0, 3, "time")]


def test_background_thread_closes_windows_on_time_into_the_sink() -> None:
    got: list[tuple[int, str]] = []
    done = threading.Event()

    def sink(profile: WindowProfile, reason: str) -> None:
        got.append((profile.rows, reason))
        done.set()

    clock = Clock(0.0)
    m = Monitor.configure(model="m", model_version="1", window_seconds=1, lateness_seconds=0, sink=sink,
                          tick_seconds=0.01, clock=clock).start()
    try:
        for _ in range(50):
            m.observe({"x": 1.0})
        for _ in range(1000):  # let the thread fold the rows at t=0 (folded later they would be late)
            if m.snapshot()["open_rows"] == 50:
                break
            time.sleep(0.01)
        clock.t = 5.0
        assert done.wait(10)
    finally:
        m.close()
    assert got == [(50, "time")]


GARBAGE: list[Any] = [
    None, "a string", b"bytes", 42, 3.5, object(), {1, 2}, [[1, 2], [3]], [[[1]]], np.zeros((2, 2, 2)),
    {"a": [1, 2], "b": [1]}, {"a": object()}, {"a": [1, 2], "b": 3}, [1, "a", None], iter([1, 2]),
    {"a": float("nan"), "b": float("inf"), "c": None}, {"a": "not a number", "b": [1, 2]},
    {(1, 2): 3}, {"a": {"nested": 1}}, np.array(["x", None], dtype=object),
]


@pytest.mark.parametrize("features", GARBAGE, ids=lambda g: type(g).__name__)
@pytest.mark.parametrize("outputs", [None, "text", {"p": [1, 2, 3]}, np.zeros((3, 3, 3)), object()])
def test_garbage_never_raises_and_is_counted_or_profiled(features: Any, outputs: Any) -> None:
    m = Monitor.configure(model="m", model_version="1", background=False)
    m.observe(features, outputs)
    m.observe(features, outputs, model=["not", "a", "string"], latency_ms="slow", event_time=object())
    m.observe(features, outputs, model_version=float("nan"), cohort="site=oslo", request_id=object())
    m.flush()
    snap = m.snapshot()
    rows = sum(p.rows for p in closed_profiles(m))
    # Each call is either observed (rows counted exactly) or rejected (counted by reason).
    assert rows == sum(snap["observed"].values())
    assert sum(snap["rejected"].values()) >= 2
    assert set(snap["rejected"]) <= {"malformed", "wrong_type", "oversized", "unknown_model", "overloaded"}


def test_nan_missing_extra_and_wrong_typed_feature_values_are_counted_in_columns() -> None:
    m = Monitor.configure(model="m", model_version="1", background=False)
    m.observe({"x": 1.0, "y": "a"})
    m.observe({"x": float("nan"), "y": None})
    m.observe({"x": "oops", "y": "b", "extra": 5.0})
    m.observe({"y": "c"})
    m.observe({"x": float("inf"), "y": 7})
    (p,) = closed_profiles(m)
    x = p.features["x"]
    # A key a row lacks is a missing value of that row (rows are folded together as one batch).
    assert (p.rows, x.count, x.nan, x.invalid, x.missing, x.inf) == (5, 1, 1, 1, 1, 1)
    assert p.features["extra"].count + p.features["extra"].missing == 5
    assert m.snapshot()["rejected"] == {}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.dictionaries(
    st.text(min_size=1, max_size=5),
    st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(), st.text(max_size=5),
              st.lists(st.integers(), max_size=2), st.binary(max_size=3)),
    max_size=6), max_size=25))
def test_random_rows_are_all_counted_and_never_raise(rows: list[dict[str, Any]]) -> None:
    one_by_one = Monitor.configure(model="m", model_version="1", background=False, max_features=10)
    as_given = Monitor.configure(model="m", model_version="1", background=False, max_features=10)
    for r in rows:
        one_by_one.observe_row(r, r.get("out"))  # always exactly one row
        as_given.observe(r, r.get("out"))  # a dict of sequences is a batch of columns
    closed = closed_profiles(one_by_one)
    snap = one_by_one.snapshot()
    assert sum(p.rows for p in closed) + sum(snap["rejected"].values()) == len(rows)
    assert sum(p.rows for p in closed_profiles(as_given)) == sum(as_given.snapshot()["observed"].values())


def test_strict_mode_raises_observe_errors() -> None:
    m = Monitor.configure(model="m", model_version="1", strict=True)
    with pytest.raises(ObserveError) as err:
        m.observe("garbage")
    assert err.value.reason == "malformed"
    with pytest.raises(ObserveError) as err:
        m.observe({"x": 1.0}, model=5)
    assert err.value.reason == "wrong_type"
    with pytest.raises(ObserveError):
        m.observe(np.zeros((3, 2)), np.zeros(4))
    m.observe({"x": 1.0})
    assert m.snapshot()["rejected"] == {"malformed": 2, "wrong_type": 1}
    assert total_rows(m) == 1


def test_allow_list_stream_limit_and_column_limit() -> None:
    m = Monitor.configure(model_version="1", background=False, allowed_models=["a", "b", "c"], max_streams=2,
                          max_features=3)
    m.observe({"x": 1.0}, model="zzz")
    m.observe({"x": 1.0}, model="a")
    m.observe({"x": 1.0}, model="b")
    m.observe({"x": 1.0}, model="c")  # a third stream
    m.observe({f"c{i}": float(i) for i in range(10)}, model="a")
    m.flush()
    snap = m.snapshot()
    assert snap["rejected"] == {"unknown_model": 1, "oversized": 1}
    assert snap["dropped_columns"] == 8  # "x" plus two of the ten new ones fit
    (a,) = [p for p in closed_profiles(m) if p.key.model == "a"]
    assert a.rows == 2 and len(a.features) == 3


def test_concurrent_callers_lose_nothing() -> None:
    m = Monitor.configure(model="m", model_version="1", tick_seconds=0.005, buffer_rows=64,
                          max_buffer_rows=500).start()
    per_thread, threads = 4000, 4

    def work(k: int) -> None:
        for i in range(per_thread):
            if i % 100 == 0:
                m.observe(np.ones((10, 2)))
            else:
                m.observe({"x": float(i), "k": str(k)})

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    expected = threads * (per_thread + 40 * 9)
    assert total_rows(m) == expected
    assert m.snapshot()["observed"][("m", "1", "default")] == expected


def test_overload_sheds_profiling_not_counts() -> None:
    m = Monitor.configure(model="m", model_version="1", background=False, max_buffer_rows=100)
    for i in range(1000):
        m.observe({"x": float(i)})
    (p,) = closed_profiles(m)
    assert p.rows == 1000
    assert p.rows_profiled == 100
    assert m.snapshot()["shed_rows"] == 900


def test_a_failing_sink_is_retried_not_lost() -> None:
    calls: list[int] = []

    def sink(profile: WindowProfile, reason: str) -> None:
        calls.append(profile.rows)
        if len(calls) < 3:
            raise OSError("disk full")

    m = Monitor.configure(model="m", model_version="1", background=False, sink=sink)
    m.observe({"x": 1.0})
    m.close()
    assert m.snapshot()["sink_errors"] == 1
    m.flush()
    m.flush()
    assert calls == [1, 1, 1] and m.snapshot()["pending_windows"] == 0


def test_latency_values_feed_runtime_stats() -> None:
    m = Monitor.configure(model="m", model_version="1", background=False)
    for v in (1.0, 2.0, 3.0, float("nan")):
        m.observe({"x": 1.0}, latency_ms=v)
    m.observe_error(errors=2)
    (p,) = closed_profiles(m)
    assert p.runtime is not None
    assert p.runtime.errors == 2
    assert p.runtime.latency_ms.n == 3
    assert math.isclose(p.runtime.latency_quantile(0.5), 2.0)


def test_a_window_being_handed_to_the_sink_still_counts_as_pending_and_goes_once() -> None:
    """Until the sink (the spool) has a closed window, the snapshot counts it: a health check taken
    then never reads "nothing pending" while its rows are only in memory. Two threads delivering at
    once still hand each window over exactly once."""
    entered, release = threading.Event(), threading.Event()
    got: list[WindowProfile] = []

    def slow_sink(profile: WindowProfile, reason: str) -> None:
        entered.set()
        release.wait(10)
        got.append(profile)

    clock = [1000.0]
    m = Monitor.configure(model="m", model_version="1", background=False, sink=slow_sink, window_seconds=10,
                          lateness_seconds=0, clock=lambda: clock[0])
    m.observe({"x": 1.0})
    m.flush()
    clock[0] += 11
    t = threading.Thread(target=m.tick)
    t.start()
    assert entered.wait(10)
    assert m.snapshot()["pending_windows"] == 1 and m.snapshot()["open_windows"] == 0
    m.flush()  # a second deliverer while the first is inside the sink: it must not hand the window over again
    release.set()
    t.join(10)
    assert len(got) == 1 and got[0].rows == 1
    assert m.snapshot()["pending_windows"] == 0
