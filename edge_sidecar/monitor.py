"""The in-process SDK: ``Monitor(...).observe(features, outputs, ...)`` for one row or a batch.

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
gives the monitor its own spool and shipper (see :mod:`.embedded`); with neither, closed windows
wait in :meth:`Monitor.take_closed`.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from driftline.batch import as_columns
from driftline.profile import ProfileConfig, StreamKey, WindowProfile

from .errors import ObserveError
from .folding import RowFolder
from .inputs import event_time_array, event_time_value, normalise_outputs, take
from .ratelog import RateLimitedLog
from .sampling import Sampler
from .streams import StreamTable
from .windowing import ClosedWindow, Windower

__all__ = ["Monitor", "Sink"]

log = logging.getLogger("driftline.sidecar.monitor")

Sink = Callable[[WindowProfile, str], None]
_ROW_SCALARS = frozenset({float, int, str, bool, type(None), bytes, np.float64, np.float32, np.int64,
                          np.int32, np.bool_, np.str_})
_RETRY_LIMIT = 1000


class Monitor:
    """Samples, windows and profiles observations of one or more models; thread-safe."""

    def __init__(
        self,
        model: str | None = None,
        model_version: str | None = None,
        variant: str = "default",
        *,
        device: str = "",
        cohort: Mapping[str, str] | None = None,
        config: ProfileConfig | None = None,
        window_seconds: float = 60.0,
        max_rows: int = 1_000_000,
        lateness_seconds: float = 10.0,
        sampler: Sampler | None = None,
        sink: Sink | None = None,
        feature_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        allowed_models: Sequence[str] = (),
        max_streams: int = 1000,
        max_features: int = 2000,
        max_cohort_labels: int = 8,
        strict: bool = False,
        background: bool = True,
        tick_seconds: float = 0.25,
        buffer_rows: int = 4096,
        max_buffer_rows: int = 100_000,
        clock: Callable[[], float] = time.time,
        service_url: str | None = None,
        token: str | None = None,
        spool_dir: str | None = None,
        spool_max_bytes: int = 64 * 1024 * 1024,
        shutdown_grace_seconds: float = 2.0,
    ) -> None:
        self._delivery: Any = None
        if service_url is not None and sink is None:  # ship from this process: its own spool and shipper
            from .embedded import EmbeddedDelivery

            self._delivery = EmbeddedDelivery(service_url, token=token, spool_dir=spool_dir,
                                              max_bytes=spool_max_bytes, device=device)
            sink = self._delivery.sink
            atexit.register(self.close)
        self._grace = shutdown_grace_seconds
        self.model = model
        self.model_version = model_version
        self.variant = variant
        self.device = device
        self.cohort = dict(cohort or {})
        self.strict = strict
        self.sink = sink
        self.sampler = sampler or Sampler()
        self.feature_names = list(feature_names) if feature_names is not None else None
        self.output_names = list(output_names) if output_names is not None else None
        self.streams = StreamTable(self, allowed_models=allowed_models, max_streams=max_streams,
                                   max_cohort_labels=max_cohort_labels)
        self.clock = clock
        self.windower = Windower(window_seconds, max_rows=max_rows, lateness=lateness_seconds,
                                 config=config, max_open=max_streams * 4)
        self._folder = RowFolder(self, max_features)
        self._buf: deque[tuple[Any, ...]] = deque()
        self._buffer_rows = buffer_rows
        self._max_buffer_rows = max_buffer_rows
        self._hard_buffer_rows = max_buffer_rows * 10
        self._lock = threading.RLock()
        self.rejected: dict[str, int] = {}
        self.windows_closed: dict[str, int] = {}
        self.sink_errors = 0
        self.windows_dropped = 0
        self._closed: deque[ClosedWindow] = deque()
        self._ratelog = RateLimitedLog(log)
        self._tick_seconds = tick_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed_for_good = False
        self._thread: threading.Thread | None = None
        if background and not strict:
            self._thread = threading.Thread(target=self._run, name="driftline-monitor", daemon=True)
            self._thread.start()

    @classmethod
    def from_settings(cls, settings: Any, sink: Sink | None = None, **kwargs: Any) -> Monitor:
        """Build from :class:`~driftline.edge_sidecar.settings.SidecarSettings`."""
        s = settings
        config = ProfileConfig(kll_k=s.profile.kll_k, fi_lg_max_k=s.profile.fi_lg_max_k,
                               hll_lg_k=s.profile.hll_lg_k, categorical=frozenset(s.profile.categorical),
                               numeric=frozenset(s.profile.numeric))
        args: dict[str, Any] = dict(
            model=s.model, model_version=s.model_version, variant=s.variant, device=s.device,
            cohort=s.cohort, config=config, window_seconds=s.window.seconds, max_rows=s.window.max_rows,
            lateness_seconds=s.window.lateness_seconds, tick_seconds=s.window.tick_seconds,
            sampler=Sampler(s.sampling.rate, s.sampling.mode, s.sampling.seed), sink=sink,
            allowed_models=s.models, max_streams=s.max_streams, max_features=s.max_features,
            max_cohort_labels=s.max_cohort_labels,
        )
        args.update(kwargs)
        return cls(**args)

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
                key, _ = self.stream_key(model, model_version, variant, device, cohort)
                now = self.clock()
                closed = self.windower.fold(key, self.windower.bucket(now), None, rows_observed=0,
                                            errors=int(errors), latency_ms=latency_ms)
                self._closed_windows(closed)
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
            for start, idx in groups:
                rows = n if idx is None else len(idx)
                sel = idx
                if keep is not None:
                    sel = np.flatnonzero(keep) if idx is None else idx[keep[idx]]
                fc, oc = self._folder.cap_columns(key, start, take(fcols, sel), take(ocols, sel))
                lat_g = lat if lat is None or lat.size == 1 or idx is None else lat[idx]
                with np.errstate(all="ignore"):  # overflowing values are the sketches' to count, not to warn
                    closed = self.windower.fold(key, start, fc or None, oc or None, rows_observed=rows,
                                                latency_ms=lat_g)
                self._closed_windows(closed)
            self.streams.count(obs, n)

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
        self._deliver()

    def close(self, flush: bool = True) -> None:
        """Stop the background thread and close every open window (reason ``shutdown``) into the sink.

        With ``service_url``, the monitor's own shipper then gets ``shutdown_grace_seconds`` to deliver;
        what it cannot deliver stays in the spool for the next start. Called at interpreter exit too.
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
        self._deliver()
        if self._delivery is not None:
            atexit.unregister(self.close)
            self._delivery.close(self._grace)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _closed_windows(self, closed: list[ClosedWindow]) -> None:
        for cw in closed:
            self.windows_closed[cw.reason] = self.windows_closed.get(cw.reason, 0) + 1
            self._closed.append(cw)

    def _deliver(self) -> None:
        if self.sink is None:
            while len(self._closed) > 10_000:
                self._closed.popleft()
                self.windows_dropped += 1
            return
        retry: list[ClosedWindow] = []
        while self._closed:
            cw = self._closed.popleft()
            try:
                self.sink(cw.profile, cw.reason)
            except Exception as exc:  # a full disk must not kill the monitor; try again next tick
                self.sink_errors += 1
                self._ratelog.error("sink", "cannot hand a closed window to the spool: %s", exc)
                retry.append(cw)
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
            self._wake.wait(self._tick_seconds)
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
            }
