"""Pure parts of the sidecar: sampling, windowing, input helpers, settings, OIP tensor decoding."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from driftline.batch import as_columns
from driftline.edge_sidecar.errors import CaptureError, ObserveError, SettingsError
from driftline.edge_sidecar.folding import rows_to_columns
from driftline.edge_sidecar.inputs import event_time_array, event_time_value, label, normalise_outputs
from driftline.edge_sidecar.oip import Exchange, decode_tensors, parse_exchange, tensor_columns
from driftline.edge_sidecar.sampling import Sampler
from driftline.edge_sidecar.settings import load_settings
from driftline.edge_sidecar.windowing import Windower
from driftline.profile import StreamKey

REPO = Path(__file__).resolve().parents[1]
KEY = StreamKey.of("m", "v1")


# ---- sampling -------------------------------------------------------------------------------------
def test_request_id_sampling_is_deterministic_across_instances_and_seeded() -> None:
    ids = [f"req-{i}" for i in range(5000)]
    a = Sampler(0.3, "request_id", seed=7)
    b = Sampler(0.3, "request_id", seed=7)
    other = Sampler(0.3, "request_id", seed=8)
    keep_a = [a.keep(r) for r in ids]
    assert keep_a == [b.keep(r) for r in ids]
    assert keep_a == list(a.mask(len(ids), ids))
    assert keep_a != [other.keep(r) for r in ids]
    assert 0.27 < sum(keep_a) / len(ids) < 0.33


def test_random_sampling_is_reproducible_with_a_seed() -> None:
    assert list(Sampler(0.5, "random", 3).mask(1000)) == list(Sampler(0.5, "random", 3).mask(1000))
    assert Sampler(1.0).mask(5).all()


@given(rate=st.floats(0.01, 1.0), rid=st.one_of(st.text(max_size=30), st.integers(), st.binary(max_size=30)))
def test_a_request_id_always_gets_the_same_decision(rate: float, rid: object) -> None:
    s = Sampler(rate, "request_id", seed=1)
    assert s.keep(rid) == s.keep(rid) == Sampler(rate, "request_id", seed=1).keep(rid)
    assert s.keep(rid) == (s.hash_unit(rid) < rate) or rate >= 1.0


@pytest.mark.parametrize("rate, mode", [(0.0, "random"), (1.5, "random"), (0.5, "hash")])
def test_bad_sampler_settings_are_refused(rate: float, mode: str) -> None:
    with pytest.raises(ValueError):
        Sampler(rate, mode)


# ---- windowing ------------------------------------------------------------------------------------
rows_strategy = st.lists(
    st.tuples(st.floats(-200.0, 400.0, allow_nan=False), st.integers(0, 2), st.floats(0.0, 5.0)),
    min_size=1, max_size=80)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_strategy, seconds=st.sampled_from([1.0, 10.0, 60.0]), lateness=st.sampled_from([0.0, 5.0, 30.0]),
       max_rows=st.integers(1, 50))
def test_every_row_lands_in_exactly_one_window(rows, seconds, lateness, max_rows) -> None:
    """Row totals are exact whatever the event times, lateness, size limit and clock steps."""
    w = Windower(seconds, max_rows=max_rows, lateness=lateness)
    now = 1000.0
    closed = []
    expected_late = 0
    for offset, stream, step in rows:
        now += step
        key = StreamKey.of(f"m{stream}", "v")
        t = now + offset - 200.0
        start = w.bucket(t)
        early = t > now + lateness
        late = not early and start + seconds + lateness <= now
        expected_late += late
        got = w.assign(t, now)
        assert got == (w.bucket(now) if early or late else start)
        closed += w.fold(key, got, {"x": [1.0]})
        due = w.tick(now)
        assert all(c.profile.end + lateness <= now for c in due)
        closed += due
        assert all(p.end + lateness > now for p in w.open_profiles())
    closed += w.flush()
    assert sum(c.profile.rows for c in closed) == len(rows)
    assert w.late_rows == expected_late
    assert w.open_windows == 0
    for c in closed:
        p = c.profile
        assert math.isclose(p.end - p.start, seconds)
        assert math.isclose(p.start / seconds, round(p.start / seconds), abs_tol=1e-6)
        assert p.rows <= max_rows
        assert c.reason in ("time", "size", "shutdown")


def test_windows_close_on_time_after_the_lateness_allowance() -> None:
    w = Windower(60, lateness=10)
    w.fold(KEY, w.assign(30.0, 30.0), {"x": [1.0, 2.0]})
    assert w.tick(69.9) == []
    assert w.tick(69.99) == []
    closed = w.tick(70.0)
    assert [(c.profile.start, c.profile.end, c.profile.rows, c.reason) for c in closed] == [(0.0, 60.0, 2, "time")]


def test_late_rows_go_to_the_current_window_and_are_counted() -> None:
    w = Windower(60, lateness=10)
    assert w.assign(55.0, 65.0) == 0.0  # within the allowance: its own window
    assert w.assign(55.0, 70.0) == 60.0  # too late: the current window
    assert w.late_rows == 1
    assert w.assign(500.0, 70.0) == 60.0  # a clock from the future
    assert w.early_rows == 1
    assert w.assign(float("nan"), 70.0) == 60.0
    assert w.invalid_time_rows == 1
    starts = w.assign_many(np.array([55.0, 61.0, np.nan, 1e9]), 75.0)
    assert list(starts) == [60.0, 60.0, 60.0, 60.0]
    assert (w.late_rows, w.early_rows, w.invalid_time_rows) == (2, 2, 2)


def test_windows_close_on_size_and_the_next_rows_reopen_the_same_bounds() -> None:
    w = Windower(60, max_rows=3)
    assert w.fold(KEY, 0.0, {"x": [1.0, 2.0]}) == []
    closed = w.fold(KEY, 0.0, {"x": [3.0]})
    assert [(c.reason, c.profile.rows) for c in closed] == [("size", 3)]
    w.fold(KEY, 0.0, {"x": [4.0]})
    assert [(p.start, p.rows) for p in w.open_profiles()] == [(0.0, 1)]


def test_open_window_count_is_bounded() -> None:
    w = Windower(60, max_open=2)
    w.window(StreamKey.of("a", "1"), 0.0)
    w.window(StreamKey.of("b", "1"), 0.0)
    with pytest.raises(ObserveError) as err:
        w.window(StreamKey.of("c", "1"), 0.0)
    assert err.value.reason == "oversized"


# ---- input helpers --------------------------------------------------------------------------------
def test_event_times_in_common_forms() -> None:
    t = 1_700_000_000.5
    assert event_time_value(t) == t
    assert event_time_value(datetime.fromtimestamp(t, UTC)) == t
    assert event_time_value(datetime.fromtimestamp(t, UTC).isoformat()) == t
    assert event_time_value("2023-11-14T22:13:20Z") == 1_700_000_000.0
    assert event_time_value(np.datetime64(1_700_000_000, "s")) == 1_700_000_000.0
    for bad in ("yesterday", True, object(), np.datetime64("NaT")):
        assert math.isnan(event_time_value(bad))
    arr = event_time_array(np.array(["2023-11-14T22:13:20", "x"], dtype=object), 2)
    assert arr[0] == 1_700_000_000.0 and math.isnan(arr[1])
    dt = event_time_array(np.array(["2023-11-14T22:13:20", "NaT"], dtype="datetime64[s]"), 2)
    assert dt[0] == 1_700_000_000.0 and math.isnan(dt[1])
    with pytest.raises(ObserveError):
        event_time_array([1.0, 2.0], 3)


def test_outputs_get_names() -> None:
    assert list(normalise_outputs(np.array([0.1, 0.9, 0.3]), 3, None)) == ["prediction"]
    assert list(normalise_outputs(np.array([0.1, 0.9]), 1, None)) == ["output_0", "output_1"]
    assert list(normalise_outputs(np.zeros((4, 2)), 4, None)) == ["output_0", "output_1"]
    assert list(normalise_outputs(0.7, 1, ["score"])) == ["score"]


def test_labels_are_short_strings() -> None:
    assert label(None, "variant", "default") == "default"
    assert label(3, "model_version", allow_numbers=True) == "3"
    for bad, reason in ((None, "malformed"), ("", "malformed"), ("x" * 200, "oversized"), (["a"], "wrong_type"),
                        (float("nan"), "wrong_type")):
        with pytest.raises(ObserveError) as err:
            label(bad, "model", allow_numbers=True)
        assert err.value.reason == reason


# ---- settings -------------------------------------------------------------------------------------
def test_example_settings_file_loads_and_matches_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_settings(REPO / "edge_sidecar" / "sidecar.example.yaml")
    assert example.device == "edge-0042" and example.cohort["site"] == "oslo-3"
    defaults = load_settings(None).model_dump(mode="json")
    dumped = example.model_dump(mode="json")
    for section in ("window", "sampling", "profile", "transport", "shipper", "api", "proxy"):
        assert dumped[section] == defaults[section], section


def test_environment_overrides_the_file_with_nested_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("device: a\nspool: {max_bytes: 1MiB}\ntransport: {kind: http}\n")
    monkeypatch.setenv("DRIFTLINE_SPOOL__MAX_BYTES", "2MiB")
    monkeypatch.setenv("DRIFTLINE_TRANSPORT__KIND", "kafka")
    monkeypatch.setenv("DRIFTLINE_TRANSPORT__KAFKA__BOOTSTRAP_SERVERS", "h1:9092,h2:9092")
    monkeypatch.setenv("DRIFTLINE_COHORT__SITE", "bergen")
    s = load_settings(f)
    assert s.device == "a"
    assert int(s.spool.max_bytes) == 2 * 1024 * 1024
    assert s.transport.kind == "kafka"
    assert s.transport.kafka.bootstrap_servers == ["h1:9092", "h2:9092"]
    assert s.cohort == {"site": "bergen"}


@pytest.mark.parametrize("text, needle", [
    ("spool: {bogus: 1}\n", "spool.bogus"),
    ("window: {seconds: -1}\n", "window.seconds"),
    ("transport: {kind: carrier-pigeon}\n", "transport.kind"),
    ("- a\n- b\n", "mapping"),
    ("device: [unclosed\n", "not valid YAML"),
])
def test_bad_settings_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(SettingsError, match=needle.replace(".", r"\.") if "." in needle else needle):
        load_settings(f)


def test_bad_environment_value_is_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_WINDOW__SECONDS", "soon")
    with pytest.raises(SettingsError, match="window.seconds"):
        load_settings(None)


# ---- OIP tensors ----------------------------------------------------------------------------------
def test_tensor_columns_batch_first() -> None:
    assert list(tensor_columns("x", np.zeros(4), None, 8)) == ["x"]
    assert list(tensor_columns("x", np.zeros((4, 1)), None, 8)) == ["x"]
    assert list(tensor_columns("x", np.zeros((4, 3)), ["a", "b", "c"], 8)) == ["a", "b", "c"]
    assert list(tensor_columns("x", np.zeros((4, 2, 2)), None, 8)) == ["x[0]", "x[1]", "x[2]", "x[3]"]
    img = tensor_columns("img", np.arange(2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8), None, 16)
    assert list(img) == ["img:mean", "img:std", "img:min", "img:max"]
    assert img["img:min"].tolist() == [0.0, 192.0]


def test_oip_exchange_to_rows_json_and_binary() -> None:
    req = {"id": "r-9", "inputs": [
        {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
        {"name": "city", "shape": [2], "datatype": "BYTES", "data": ["oslo", "bergen"]}]}
    resp = {"model_version": "7", "outputs": [{"name": "p", "shape": [2, 1], "datatype": "FP64", "data": [0.1, 0.9]}]}
    rows = parse_exchange(Exchange("m", None, json.dumps(req).encode(), None, json.dumps(resp).encode(), None))
    assert rows.n == 2 and rows.request_id == "r-9" and rows.model_version == "7"
    assert rows.features["x[1]"].tolist() == [2.0, 4.0]
    assert rows.features["city"].tolist() == ["oslo", "bergen"]
    assert rows.outputs["p"].tolist() == [0.1, 0.9]
    # Binary extension: FP32 bytes and length-prefixed BYTES after the JSON header.
    blob = np.array([[1, 2], [3, 4]], dtype="<f4").tobytes()
    strings = b"".join(len(s).to_bytes(4, "little") + s for s in (b"ab", b"c"))
    head = json.dumps({"inputs": [
        {"name": "x", "shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": len(blob)}},
        {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(strings)}}]}).encode()
    _, tensors = decode_tensors(head + blob + strings, len(head), "inputs")
    assert tensors[0][1].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert tensors[1][1].tolist() == ["ab", "c"]


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[]", b'{"inputs": 3}', b'{"inputs": [{"name": "x"}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": ["a", "b"]}]}',
    b'{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": []}]}',
    b'{"inputs": [{"name": "x", "shape": [1], "datatype": "COMPLEX", "data": [1]}]}',
    b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 99}}]}',
    b'{"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "data": [1, 2]},'
    b' {"name": "b", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]}',
])
def test_unreadable_inference_bodies_raise_capture_errors_only(body: bytes) -> None:
    with pytest.raises(CaptureError):
        parse_exchange(Exchange("m", None, body, None, b"{}", None))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "a": st.one_of(st.floats(), st.integers(-10**6, 10**6)),
    "b": st.one_of(st.text(max_size=4), st.none(), st.booleans(), st.floats(), st.integers(-5, 5)),
    "c": st.text(max_size=3),
}), min_size=1, max_size=20))
@example([{"a": 0.0, "b": None, "c": "\x00"}])  # numpy's str dtype would drop the trailing NUL
def test_fast_row_unpacking_matches_the_core(rows: list[dict[str, object]]) -> None:
    """The folding thread's fast path builds the same columns as driftline.batch.as_columns."""
    fast, core = rows_to_columns(rows), as_columns(rows)[1]
    assert list(fast) == list(core)
    for k in core:
        assert (fast[k].dtype.kind == "f") == (core[k].dtype.kind == "f"), k
        if core[k].dtype.kind == "f":
            np.testing.assert_array_equal(fast[k], core[k])  # NaN where NaN
        else:
            assert [repr(v) for v in fast[k].tolist()] == [repr(v) for v in core[k].tolist()], k


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries({"a": st.one_of(st.floats(), st.integers(-10**6, 10**6)),
                                       "b": st.floats(width=32), "c": st.integers(-5, 5)}), min_size=1, max_size=20),
       st.randoms(use_true_random=False))
def test_fast_unpacking_of_all_numeric_rows_in_any_key_order_matches_the_core(rows: list[dict[str, object]],
                                                                             rnd: random.Random) -> None:
    """All-number rows take one cast; rows with the same keys in another order are unpacked by key."""
    rows = [dict(rnd.sample(list(r.items()), len(r))) if i else r for i, r in enumerate(rows)]
    fast, core = rows_to_columns(rows), as_columns(rows)[1]
    assert list(fast) == list(core)
    for k in core:
        assert fast[k].dtype == core[k].dtype and fast[k].flags.c_contiguous, k
        np.testing.assert_array_equal(fast[k], core[k])


def test_public_names_resolve_and_modules_declare_all() -> None:
    import importlib
    import pkgutil

    import driftline.edge_sidecar as pkg

    for name in pkg.__all__:
        assert getattr(pkg, name).__doc__, name
    for mod in pkgutil.walk_packages(pkg.__path__, prefix="driftline.edge_sidecar."):
        module = importlib.import_module(mod.name)
        assert isinstance(getattr(module, "__all__", None), list), mod.name
        for name in module.__all__:
            assert hasattr(module, name), (mod.name, name)
