"""The typed seams inside the SDK: one frozen config, an explicit start, and a folder given only its parts.

* :class:`MonitorConfig` is a frozen value; ``Monitor.configure`` refuses an unknown field by name.
* The constructor starts nothing (no thread, no spool directory, no shipper); :meth:`Monitor.start`
  and ``with`` do, once; a monitor that never started still spools its windows on close.
* :class:`RowFolder` works from a windower, a stream table, a reject counter and a closed-window sink,
  with no monitor at all, and :meth:`RowFolder.fold` is the only caller of ``Windower.fold``.
"""

from __future__ import annotations

import dataclasses
import inspect
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftline.edge_sidecar.errors import SettingsError
from driftline.edge_sidecar.folding import RowFolder
from driftline.edge_sidecar.monitor import Monitor
from driftline.edge_sidecar.monitorconfig import MonitorConfig
from driftline.edge_sidecar.settings import load_settings
from driftline.edge_sidecar.spool import Spool
from driftline.edge_sidecar.streams import StreamDefaults, StreamTable
from driftline.edge_sidecar.windowing import ClosedWindow, Windower
from driftline.profile import ProfileConfig, WindowProfile
from tests.harness.ports import free_port

T0 = 1_700_000_000.0


def threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


# ---- the config --------------------------------------------------------------------------------------
def test_the_config_is_a_frozen_value() -> None:
    cohort = {"site": "oslo"}
    c = MonitorConfig(model="fraud", cohort=cohort, allowed_models=["fraud"], feature_names=["a", "b"],
                      token="s3cret")
    cohort["site"] = "bergen"  # the caller's dict is copied, not shared
    assert c.cohort == {"site": "oslo"} and c.allowed_models == ("fraud",) and c.feature_names == ("a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.model = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        c.cohort["site"] = "x"  # type: ignore[index]
    assert "s3cret" not in repr(c)
    assert dataclasses.replace(c, model="other").model == "other" and c.model == "fraud"
    assert c.stream_defaults == StreamDefaults("fraud", None, "default", "", {"site": "oslo"})
    with pytest.raises(TypeError, match="window_secs"):
        Monitor.configure(model="m", window_secs=5)
    for bad in ("localhost:8000", "http://", "kafka://broker:9092", "ftp://x"):
        with pytest.raises(SettingsError):
            MonitorConfig(service_url=bad)


def test_the_config_from_the_sidecar_settings() -> None:
    s = load_settings(None, model="fraud", model_version="3", device="pod-1", cohort={"site": "oslo"}, models=["fraud"],
                      window={"seconds": 5, "max_rows": 70, "lateness_seconds": 1, "tick_seconds": 0.5},
                      sampling={"rate": 0.5, "mode": "random", "seed": 9}, max_streams=7, max_features=11,
                      max_cohort_labels=2, profile={"kll_k": 200, "categorical": ["zip"]})
    c = MonitorConfig.from_settings(s, strict=True)
    assert (c.model, c.model_version, c.device, dict(c.cohort), c.allowed_models) == (
        "fraud", "3", "pod-1", {"site": "oslo"}, ("fraud",))
    assert (c.window_seconds, c.max_rows, c.lateness_seconds, c.tick_seconds) == (5, 70, 1, 0.5)
    assert (c.sampling_rate, c.sampling_mode, c.sampling_seed) == (0.5, "random", 9)
    assert (c.max_streams, c.max_features, c.max_cohort_labels, c.strict) == (7, 11, 2, True)
    assert c.profile == ProfileConfig(kll_k=200, categorical=frozenset({"zip"}))
    m = Monitor(c)
    assert m.windower.seconds == 5 and m.windower.max_open == 28 and m.sampler.mode == "random"


# ---- starting --------------------------------------------------------------------------------------
def test_the_constructor_starts_nothing_and_start_starts_once(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    before_monitor, before_shipper = len(threads("driftline-monitor")), len(threads("driftline-shipper"))
    m = Monitor.configure(model="m", model_version="1", service_url=f"http://127.0.0.1:{free_port()}",
                          spool_dir=str(spool), shutdown_grace_seconds=0, tick_seconds=0.01)
    assert not m.started and m.spool_path is None and not spool.exists()
    assert len(threads("driftline-monitor")) == before_monitor
    assert len(threads("driftline-shipper")) == before_shipper
    assert m.start() is m and m.start() is m  # idempotent
    assert m.started and m.spool_path == spool / "0"
    assert len(threads("driftline-monitor")) == before_monitor + 1
    assert len(threads("driftline-shipper")) == before_shipper + 1
    m.close()
    assert len(threads("driftline-monitor")) == before_monitor
    assert len(threads("driftline-shipper")) == before_shipper
    m.start()  # closed for good: nothing starts again
    assert len(threads("driftline-monitor")) == before_monitor


def test_with_starts_the_thread_and_closes_into_the_sink() -> None:
    got: list[tuple[int, str]] = []
    with Monitor.configure(model="m", sink=lambda p, r: got.append((p.rows, r)), tick_seconds=0.01) as m:
        assert m.started and m._thread is not None and m._thread.is_alive()
        m.observe(np.ones((5, 2)))
    assert got == [(5, "shutdown")] and not m._thread.is_alive()


def test_a_monitor_that_never_started_still_spools_its_windows(tmp_path: Path) -> None:
    m = Monitor.configure(model="m", model_version="1", service_url=f"http://127.0.0.1:{free_port()}",
                          spool_dir=str(tmp_path), shutdown_grace_seconds=0)
    for i in range(7):
        m.observe({"x": float(i)})
    m.close()
    left = Spool(tmp_path / "0", 10**9)
    assert left.stats().pending_rows == 7
    left.close()


def test_without_a_sink_or_url_nothing_is_delivered_and_windows_wait() -> None:
    m = Monitor.configure(model="m", background=False).start()
    assert m._thread is None and m.spool_path is None  # background=False: start opens nothing
    m.observe({"x": 1.0})
    m.close()
    assert [c.profile.rows for c in m.take_closed()] == [1]


# ---- the folder --------------------------------------------------------------------------------------
def row(features: Any, outputs: Any = None, *, model: Any = None, latency: Any = None, t: float = T0,
        keep: bool | None = True) -> tuple[Any, ...]:
    """A buffered row as the monitor queues it."""
    return (features, outputs, model, None, None, None, None, None, latency, None, t, keep)


def test_the_folder_needs_only_a_windower_a_stream_table_a_reject_counter_and_a_sink() -> None:
    windower = Windower(60, max_rows=4, lateness=0)
    streams = StreamTable(StreamDefaults(model="m", model_version="1"), allowed_models=["m", "n"])
    rejected: list[BaseException] = []
    closed: list[ClosedWindow] = []
    folder = RowFolder(windower, streams, rejected.append, closed.extend, max_features=2,
                       output_names=["score"])
    folder.fold_rows([
        row({"a": 1.0, "b": "x"}, 0.5, latency=3.0),
        row({"a": 2.0, "b": "y"}, 0.7),
        row(np.array([1.0, 2.0]), 0.1),
        row({"a": 3.0}, model="zzz"),            # not on the allow-list: rejected, counted nowhere else
        row("garbage"),                          # wrong type
        row({"a": 4.0, "c": 1.0, "d": 2.0}),     # c and d are past max_features (a, b already there)
        row(None, keep=False),                   # sampled out: counted, not profiled
    ], now=T0)
    assert [type(e).__name__ for e in rejected] == ["ObserveError", "ObserveError"]
    assert [getattr(e, "reason", None) for e in rejected] == ["unknown_model", "wrong_type"]
    assert streams.observed == {("m", "1", "default"): 5}
    assert folder.dropped_columns == 2  # c and d; the array row opened a fresh window (the first closed)
    assert [c.reason for c in closed] == ["size"]  # four rows reached max_rows
    (w,) = windower.open_profiles()
    profiles: list[WindowProfile] = [c.profile for c in closed] + [w]
    assert sum(p.rows for p in profiles) == 5 and sum(p.rows_profiled for p in profiles) == 4
    assert set(closed[0].profile.outputs) == {"score"}
    # the batch path's step, with no rows to buffer: same counters, same sink
    folder.fold(w.key, w.start, ("m", "1", "default"), {"a": np.arange(2.0)}, {}, rows=2, latency=np.ones(2))
    assert streams.observed[("m", "1", "default")] == 7 and windower.open_rows == 3 and len(closed) == 1
    assert folder.dropped_columns == 3 and len(w.features) == 2  # the array's two columns fill that window


def test_every_way_in_folds_through_the_one_fold_step(monkeypatch: pytest.MonkeyPatch) -> None:
    callers: list[str] = []
    real = Windower.fold

    def spy(self: Windower, *args: Any, **kwargs: Any) -> list[ClosedWindow]:
        caller = inspect.stack()[1]
        callers.append(f"{Path(caller.filename).name}:{caller.function}")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Windower, "fold", spy)
    m = Monitor.configure(model="m", background=False, lateness_seconds=1000, clock=lambda: T0 + 700)
    m.observe(np.ones((3, 2)))                       # a batch
    m.observe({"x": 1.0}, request_id="r1")           # one row, buffered
    m.flush()
    m.observe_error(errors=2)                        # failed inferences
    m.observe({"x": [1.0, 2.0]}, event_time=[T0, T0 + 600])  # a batch over two windows
    assert len(callers) == 5 and set(callers) == {"folding.py:fold"}
    m.close()
    profiles = [c.profile for c in m.take_closed()]
    assert len({p.start for p in profiles}) == 3  # T0's window, T0 + 600's, and now's
    assert sum(p.rows for p in profiles) == 6
    assert sum(p.runtime.errors for p in profiles if p.runtime is not None) == 2
