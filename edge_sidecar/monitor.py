"""The in-process SDK: ``Monitor.configure(...).start()``, then ``observe(features, outputs, ...)``.

A monitor is built from one :class:`~driftline.edge_sidecar.monitorconfig.MonitorConfig`
(``Monitor(config, sink=..., clock=...)``; :meth:`Monitor.configure` takes the config's fields as
keywords) and starts nothing until :meth:`Monitor.start` or ``with``.

Costs the inference path almost nothing and never raises into it:

* A single row (a dict of scalars, or a 1-D array) is copied and appended to a lock-free buffer;
  a background thread folds buffered rows into windows in batches, so one ``observe`` is a few
  microseconds whatever the number of features. If the folding thread falls ``max_buffer_rows``
  behind, further rows are counted exactly but not profiled (``shed_rows``) until it catches up:
  the caller is never made to wait.
* A batch (2-D array, dict of columns, list of row dicts, pandas frame) is folded at once in the
  caller's thread: vectorised sketch updates, no per-value Python work for numeric columns.
* Anything unusable (garbage, wrong types, too many labels, a model not on the allow-list) becomes
  a counted rejection with a reason, logged at most once per reason every ten seconds. Wrong-typed,
  missing, NaN and extra *feature values* are not rejections: the column summaries count them.
  ``strict=True`` (tests) raises :class:`~driftline.edge_sidecar.errors.ObserveError` instead.

Closed windows go to ``sink(profile, reason)`` (the spool, in the sidecar). ``service_url=...``
gives the monitor its own spool and shipper, opened by :meth:`Monitor.start` (see :mod:`.embedded`);
with neither, closed windows wait in :meth:`Monitor.take_closed`.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from driftline.batch import as_columns
from driftline.errors import LabelError
from driftline.profile import StreamKey, WindowProfile

from .errors import ObserveError
from .folding import RowFolder
from .inputs import event_time_array, event_time_value, normalise_outputs, take
from .labels import LabelTracker
from .monitorconfig import MonitorConfig
from .ratelog import RateLimitedLog
from .sampling import Sampler
from .streams import StreamTable
from .windowing import ClosedWindow, Windower

__all__ = ["Monitor", "MonitorConfig", "Sink"]

log = logging.getLogger("driftline.sidecar.monitor")

Sink = Callable[[WindowProfile, str], None]
_ROW_SCALARS = frozenset({float, int, str, bool, type(None), bytes, np.float64, np.float32, np.int64,
                          np.int32, np.bool_, np.str_})
_RETRY_LIMIT = 1000


class Monitor:
    """Samples, windows and profiles observations of one or more models; thread-safe.

    Built from one :class:`~driftline.edge_sidecar.monitorconfig.MonitorConfig` (plus what it talks
    to: a sink and a clock); :meth:`configure` builds both in one call. The constructor starts
    nothing: :meth:`start` (or ``with``) starts the folding thread and, with ``service_url``, the
    monitor's own spool and shipper; :meth:`close` stops them.
    """

    def __init__(self, config: MonitorConfig | None = None, *, sink: Sink | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        c = self.config = config if config is not None else MonitorConfig()
        self.sink = sink
        self.clock = clock
        self.strict = c.strict
        self.sampler = Sampler(c.sampling_rate, c.sampling_mode, c.sampling_seed)
        self.feature_names = list(c.feature_names) if c.feature_names is not None else None
        self.output_names = list(c.output_names) if c.output_names is not None else None
        self.streams = StreamTable(c.stream_defaults, allowed_models=c.allowed_models, max_streams=c.max_streams,
                                   max_cohort_labels=c.max_cohort_labels)
        self.windower = Windower(c.window_seconds, max_rows=c.max_rows, lateness=c.lateness_seconds,
                                 config=c.profile, max_open=c.max_streams * 4)
        self._folder = RowFolder(self.windower, self.streams, self.reject, self._closed_windows,
                                 max_features=c.max_features, feature_names=self.feature_names,
                                 output_names=self.output_names)
        self._buf: deque[tuple[Any, ...]] = deque()
        self._buffer_rows = c.buffer_rows
        self._max_buffer_rows = c.max_buffer_rows
        self._hard_buffer_rows = c.max_buffer_rows * 10
        self._lock = threading.RLock()
        self._delivering = threading.Lock()  # one thread hands closed windows to the sink at a time
        self.rejected: dict[str, int] = {}
        self.windows_closed: dict[str, int] = {}
        self.sink_errors = 0
        self.windows_dropped = 0
        self._closed: deque[ClosedWindow] = deque()
        self._ratelog = RateLimitedLog(log)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._started = False
        self._closed_for_good = False
        self._thread: threading.Thread | None = None
        self._delivery: Any = None
        self.labels: LabelTracker | None = None
        if c.labels:  # delayed labels: predictions remembered by request_id (driftline.edge_sidecar.labels)
            self.labels = LabelTracker(window_seconds=c.window_seconds, lateness_seconds=c.lateness_seconds,
                                       output=c.label_output, task=c.label_task, threshold=c.label_threshold,
                                       horizon_seconds=c.label_horizon_seconds, max_pending=c.label_max_pending,
                                       flush_seconds=c.label_flush_seconds)
            self._folder.predictions = self.labels.record_row  # rows are remembered where they are folded

    @classmethod
    def configure(cls, *, sink: Sink | None = None, clock: Callable[[], float] = time.time,
                  **fields: Any) -> Monitor:
        """``Monitor(MonitorConfig(**fields), sink=sink, clock=clock)``: the SDK's one-call form (not started).

        An unknown field is a ``TypeError`` that names it.
        """
        return cls(MonitorConfig(**fields), sink=sink, clock=clock)

    def start(self) -> Monitor:
        """Start delivering: the monitor's own spool and shipper (``service_url``, no sink) and the
        folding thread (``background`` and not ``strict``). Idempotent; returns the monitor."""
        c = self.config
        with self._lock:
            if self._started or self._closed_for_good:
                return self
            self._open_delivery()  # a URL it cannot use raises here, and the monitor stays unstarted
            self._started = True
            if c.background and not c.strict:
                self._thread = threading.Thread(target=self._run, name="driftline-monitor", daemon=True)
                self._thread.start()
        return self

    def _open_delivery(self) -> None:
        c = self.config
        if c.service_url is not None and self.sink is None and self._delivery is None:  # ship from this process
            from .embedded import EmbeddedDelivery

            self._delivery = EmbeddedDelivery(c.service_url, token=c.token, spool_dir=c.spool_dir,
                                              max_bytes=c.spool_max_bytes, device=c.device)
            self.sink = self._delivery.sink
            atexit.register(self.close)

    @property
    def started(self) -> bool:
        """True once :meth:`start` ran (closing does not reset it)."""
        return self._started

    # ---- the hot path --------------------------------------------------------------------------
    def observe(
        self,
        features: Any,
        outputs: Any = None,
        *,
        model: str | None = None,
        model_version: str | None = None,
        variant: str | None = None,
        request_id: Any = None,
        latency_ms: Any = None,
        event_time: Any = None,
        device: str | None = None,
        cohort: Mapping[str, Any] | None = None,
        processing_time: Any = None,
    ) -> None:
        """Record one row or a batch. Never raises unless the monitor is strict.

        ``processing_time`` (batches only; replay) is the clock to judge lateness by, one value or
        one per row; it defaults to the monitor's clock.
        """
        try:
            tf = type(features)
            if tf is dict:
                single = not features or type(next(iter(features.values()))) in _ROW_SCALARS
            else:
                single = tf is np.ndarray and features.ndim == 1
            if single and processing_time is None:
                self.observe_row(features, outputs, model=model, model_version=model_version, variant=variant,
                                 request_id=request_id, latency_ms=latency_ms, event_time=event_time,
                                 device=device, cohort=cohort)
            else:
                self._observe_batch(features, outputs, model, model_version, variant, request_id, latency_ms,
                                    event_time, device, cohort, processing_time)
        except Exception as exc:  # the caller's inference path must survive anything we do
            self.reject(exc)

    def observe_row(self, features: Any, outputs: Any = None, *, model: Any = None, model_version: Any = None,
                    variant: Any = None, request_id: Any = None, latency_ms: Any = None, event_time: Any = None,
                    device: Any = None, cohort: Any = None) -> None:
        """Record exactly one row (``features`` is a mapping or a 1-D array); buffered, folded later."""
        try:
            buf = self._buf
            if len(buf) >= self._max_buffer_rows:
                keep: bool | None = None  # overloaded: count the row exactly, do not profile it
            else:
                keep = True if self.sampler.rate >= 1.0 else self.sampler.keep(request_id)
            if keep:
                features = features.copy() if hasattr(features, "copy") else features
                if type(outputs) is dict or type(outputs) is np.ndarray:
                    outputs = outputs.copy()
            else:
                features = outputs = None
            buf.append((features, outputs, model, model_version, variant, device, cohort, request_id,
                        latency_ms, event_time, self.clock(), keep))
            n = len(buf)
            if self.strict or n >= self._hard_buffer_rows:
                self.flush()
            elif n >= self._buffer_rows:
                self._wake.set()
        except Exception as exc:
            self.reject(exc)

    def observe_error(self, *, model: Any = None, model_version: Any = None, variant: Any = None,
                      errors: int = 1, latency_ms: Any = None, device: Any = None, cohort: Any = None) -> None:
        """Count failed inferences (no rows) in the current window of a stream."""
        try:
            with self._lock:
                key, obs = self.stream_key(model, model_version, variant, device, cohort)
                start = self.windower.bucket(self.clock())
                self._folder.fold(key, start, obs, {}, {}, rows=0, errors=int(errors), latency=latency_ms)
        except Exception as exc:
            self.reject(exc)

    # ---- batches ---------------------------------------------------------------------------------
    def _observe_batch(self, features: Any, outputs: Any, model: Any, model_version: Any, variant: Any,
                       request_id: Any, latency_ms: Any, event_time: Any, device: Any, cohort: Any,
                       processing_time: Any = None) -> None:
        if features is None and outputs is None:
            raise ObserveError("nothing to observe: features and outputs are both None", "malformed")
        names = self.feature_names if isinstance(features, np.ndarray) else None
        n, fcols = as_columns(features, names)
        outs = normalise_outputs(outputs, n, self.output_names)
        n_out, ocols = as_columns(outs, self.output_names if isinstance(outs, np.ndarray) else None)
        if fcols and ocols and n_out != n:
            raise ObserveError(f"features have {n} rows but outputs have {n_out}", "malformed")
        n = n or n_out
        if n == 0:
            return
        lat = None if latency_ms is None else np.atleast_1d(np.asarray(latency_ms, dtype=np.float64))
        if lat is not None and lat.size not in (1, n):
            raise ObserveError(f"latency_ms has {lat.size} values for {n} rows", "malformed")
        keep = None if self.sampler.rate >= 1.0 else self.sampler.mask(n, request_id)
        with self._lock:
            key, obs = self.stream_key(model, model_version, variant, device, cohort)
            now = self.clock() if processing_time is None else processing_time
            if np.ndim(now) == 0 and (event_time is None or np.ndim(event_time) == 0
                                      and not isinstance(event_time, list)):
                t = None if event_time is None else event_time_value(event_time)
                groups: list[tuple[float, np.ndarray | None]] = [(self.windower.assign(t, float(now), n), None)]
            else:
                times = np.full(n, np.nan) if event_time is None else event_time_array(event_time, n)
                if np.ndim(now):
                    now = event_time_array(now, n)
                    times = np.where(np.isnan(times), now, times)
                starts = self.windower.assign_many(times, now)
                uniq = np.unique(starts)
                groups = [(float(uniq[0]), None)] if len(uniq) == 1 else [
                    (float(s), np.flatnonzero(starts == s)) for s in uniq]
            if self.labels is not None and request_id is not None:
                self.labels.record_batch(request_id, key, groups, ocols, float(np.max(now)))
            for start, idx in groups:
                rows = n if idx is None else len(idx)
                sel = idx
                if keep is not None:
                    sel = np.flatnonzero(keep) if idx is None else idx[keep[idx]]
                lat_g = lat if lat is None or lat.size == 1 or idx is None else lat[idx]
                self._folder.fold(key, start, obs, take(fcols, sel), take(ocols, sel), rows=rows, latency=lat_g)

    # ---- labels ----------------------------------------------------------------------------------
    def stream_key(self, model: Any, model_version: Any, variant: Any, device: Any,
                   cohort: Any) -> tuple[StreamKey, tuple[str, str, str]]:
        """The stream of a row, validated and cached; raises ObserveError with a reason."""
        return self.streams.key(model, model_version, variant, device, cohort)

    @property
    def observed(self) -> dict[tuple[str, str, str], int]:
        """Rows observed per (model, version, variant), exact, before sampling."""
        return self.streams.observed

    # ---- errors ----------------------------------------------------------------------------------
    def reject(self, exc: BaseException, count: int = 1) -> None:
        """Count an unusable input under its reason; re-raise it as ObserveError when strict."""
        if getattr(exc, "counted", False):  # strict mode: already counted where it was first seen
            raise exc
        if isinstance(exc, ObserveError):
            reason = exc.reason
        elif isinstance(exc, TypeError):
            reason = "wrong_type"
        else:
            reason = "malformed"
        with self._lock:
            self.rejected[reason] = self.rejected.get(reason, 0) + count
        if self.strict:
            err = exc if isinstance(exc, ObserveError) else ObserveError(f"{type(exc).__name__}: {exc}", reason)
            err.counted = True  # type: ignore[attr-defined]
            if err is exc:
                raise err
            raise err from exc
        self._ratelog.warning(f"reject:{reason}", "observation rejected (%s): %s: %s",
                              reason, type(exc).__name__, exc)

    # ---- folding and closing -----------------------------------------------------------------------
    def _drain(self) -> list[tuple[Any, ...]]:
        buf = self._buf
        n = len(buf)
        return [buf.popleft() for _ in range(n)]

    def flush(self) -> None:
        """Fold every buffered row now (windows stay open); hand closed windows to the sink."""
        with self._lock:
            items = self._drain()
            if items:
                self._folder.fold_rows(items, self.clock())
        self._deliver()

    def tick(self) -> None:
        """Fold buffered rows and close windows that are due; the background thread calls this."""
        with self._lock:
            now = self.clock()
            items = self._drain()
            if items:
                self._folder.fold_rows(items, now)
            self._closed_windows(self.windower.tick(now))
            if self.labels is not None:
                self._closed_windows([ClosedWindow(p, "labels") for p in self.labels.take(now)])
        self._deliver()

    def close(self, flush: bool = True) -> None:
        """Stop the background thread and close every open window (reason ``shutdown``) into the sink.

        With ``service_url``, the monitor's own shipper then gets ``shutdown_grace_seconds`` to deliver;
        what it cannot deliver stays in the spool for the next start. Called at interpreter exit too.
        A monitor is not started again after this; one that never started still hands its windows to
        its own spool (``service_url``), so forgetting :meth:`start` delays data but does not lose it.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        with self._lock:
            if self._closed_for_good:
                return
            self._closed_for_good = True
            items = self._drain()
            if items:
                self._folder.fold_rows(items, self.clock())
            if flush:
                self._closed_windows(self.windower.flush("shutdown"))
            if self.labels is not None:
                self._closed_windows([ClosedWindow(p, "labels") for p in self.labels.take(self.clock(), True)])
            if self._closed:
                self._open_delivery()
        self._deliver(wait=True)
        if self._delivery is not None:
            atexit.unregister(self.close)
            self._delivery.close(self.config.shutdown_grace_seconds)

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _closed_windows(self, closed: list[ClosedWindow]) -> None:
        for cw in closed:
            self.windows_closed[cw.reason] = self.windows_closed.get(cw.reason, 0) + 1
            self._closed.append(cw)

    def _deliver(self, wait: bool = False) -> None:
        if self.sink is None:
            while len(self._closed) > 10_000:
                self._closed.popleft()
                self.windows_dropped += 1
            return
        # one deliverer at a time (observe's flush and the background tick both call this); a caller
        # that finds one busy leaves its windows to it or to the next tick, except close(), which waits
        if not self._delivering.acquire(blocking=wait):
            return
        try:
            self._deliver_closed()
        finally:
            self._delivering.release()

    def _deliver_closed(self) -> None:
        retry: list[ClosedWindow] = []
        while self._closed:
            # the window leaves the queue only once the sink has it: until then it counts as pending
            # (health and metrics never show a window that is neither queued nor spooled)
            cw = self._closed[0]
            try:
                self.sink(cw.profile, cw.reason)
            except Exception as exc:  # a full disk must not kill the monitor; try again next tick
                self.sink_errors += 1
                self._ratelog.error("sink", "cannot hand a closed window to the spool: %s", exc)
                retry.append(cw)
            self._closed.popleft()
        if len(retry) > _RETRY_LIMIT:
            self.windows_dropped += len(retry) - _RETRY_LIMIT
            log.error("dropped %d closed windows the spool would not take", len(retry) - _RETRY_LIMIT)
            retry = retry[-_RETRY_LIMIT:]
        self._closed.extendleft(reversed(retry))

    def take_closed(self) -> list[ClosedWindow]:
        """Closed windows waiting for a caller (only used when there is no sink)."""
        out = []
        while self._closed:
            out.append(self._closed.popleft())
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.tick_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.tick()
            except Exception:  # pragma: no cover - tick counts its own errors; this is a last resort
                log.exception("monitor tick failed")

    # ---- reading -----------------------------------------------------------------------------------
    @property
    def spool_path(self) -> Any:
        """The directory of this monitor's own spool (``service_url=`` given), else None."""
        return self._delivery.spool.root if self._delivery is not None else None

    @property
    def buffered_rows(self) -> int:
        return len(self._buf)

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of the counters (metrics and health read this at scrape time)."""
        with self._lock:
            return {
                "observed": dict(self.observed),
                "rejected": dict(self.rejected),
                "windows_closed": dict(self.windows_closed),
                "late_rows": self.windower.late_rows,
                "early_rows": self.windower.early_rows,
                "invalid_time_rows": self.windower.invalid_time_rows,
                "open_windows": self.windower.open_windows,
                "open_rows": self.windower.open_rows,
                "buffered_rows": len(self._buf),
                "pending_windows": len(self._closed),
                "dropped_columns": self._folder.dropped_columns,
                "shed_rows": self._folder.shed_rows,
                "sink_errors": self.sink_errors,
                "windows_dropped": self.windows_dropped,
                **({"labels": self.labels.snapshot()} if self.labels is not None else {}),
            }

    # ---- delayed labels (driftline.edge_sidecar.labels) ---------------------------------------------
    def label(self, prediction_id: Any, y: Any) -> bool:
        """Join the label ``y`` to the prediction observed with ``request_id=prediction_id``.

        True when the prediction was waiting; an unknown or expired id is counted and answers False.
        Never raises unless the monitor is strict (a bad label is counted under its reason).
        """
        if self.labels is None:
            return self.label_many([prediction_id], [y]) == 1
        try:
            return self.labels.label(prediction_id, y, self.clock())
        except LabelError as exc:
            if self.strict:
                raise ObserveError(str(exc), exc.reason) from exc
            return False

    def label_many(self, prediction_ids: Any, ys: Any) -> int:
        """Join a batch of labels; returns how many found their prediction (see :meth:`label`)."""
        if self.labels is None:
            if self.strict:
                raise ObserveError("labels are off: configure the monitor with labels=True", "labels_off")
            return 0
        try:
            return self.labels.label_many(list(prediction_ids), list(ys), self.clock())
        except LabelError as exc:
            if self.strict:
                raise ObserveError(str(exc), exc.reason) from exc
            return 0

    def set_reconstruction(self, lookup: Callable[[StreamKey], Any] | None) -> None:
        """Sketch each folded batch's reconstruction errors with the model ``lookup`` gives for its stream
        (the judge's references carry it; ``None`` turns it off)."""
        with self._lock:
            self._folder.reconstruction = lookup
