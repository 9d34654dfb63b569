"""Fold columns into windows: the one fold step of every way in, plus the buffered-row batching.

:meth:`RowFolder.fold` is the only place a batch of columns enters a window: it drops columns past
the per-window bound, updates the window, counts the rows of the stream and hands windows that
closed on size to the closed-window sink. The SDK's batch path, its error counter and the row path
all call it.

The row path: the monitor's background thread hands over everything buffered since the last tick.
Rows are grouped by stream and window, turned into columns once per group, and folded with one
vectorised update per column. A group that fails as a whole is retried row by row, so one bad row is
one counted rejection and never costs its neighbours their place in the totals.

The folder is given exactly what it uses (the windower, the stream table, a reject counter and a
closed-window sink) and owns no lock: its owner holds one while calling in.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from driftline.batch import as_columns
from driftline.profile import StreamKey
from driftline.reconstruction import ErrorSketch, ReconstructionModel
from driftline.wirecheck import name_ok

from .errors import ObserveError
from .inputs import event_time_value
from .ratelog import RateLimitedLog
from .streams import Obs, StreamTable
from .windowing import ClosedWindow, Windower

__all__ = ["ClosedSink", "Reject", "RowFolder", "rows_to_columns"]

Reject = Callable[[BaseException], None]
"""Counts an unusable input under its reason (and re-raises it when the owner is strict)."""
ClosedSink = Callable[[list[ClosedWindow]], None]
"""Takes windows that will not change again, in the order they closed."""

log = logging.getLogger("driftline.sidecar.monitor")
MAX_COLUMN_NAME = 256
_SCALARS = (str, bytes, bool, int, float, np.generic)


_NUMBER_TYPES = frozenset({float, int, np.float64, np.float32, np.int64, np.int32})


def rows_to_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Columns of row dicts, as :func:`driftline.batch.as_columns` makes them, faster for one shared schema.

    Rows with the same keys (the usual case) are unpacked in C (``itemgetter`` into a 2-D object array);
    a column whose values are all plain numbers becomes float64, all strings a string array. Anything
    else, and rows with differing keys, take the core's general path, so the result is the same.
    """
    first = rows[0].keys()
    keys = tuple(first)
    # the same key set is enough (itemgetter fetches by key); a dict_keys comparison is one C call per row
    if not keys or any(r.keys() != first for r in rows):
        return as_columns(rows)[1]
    getter = operator.itemgetter(*keys)
    table = np.empty((len(rows), len(keys)), dtype=object)
    table[:] = list(map(getter, rows)) if len(keys) > 1 else [(getter(r),) for r in rows]
    cols: dict[str, np.ndarray] = {}
    if set(map(type, table.ravel())) <= _NUMBER_TYPES:  # all numbers (the usual features): one cast, in C
        return dict(zip(map(str, keys), table.astype(np.float64).T.copy(), strict=True))
    for j, k in enumerate(keys):
        col = table[:, j]
        kinds = set(map(type, col))
        if kinds <= _NUMBER_TYPES:
            cols[str(k)] = col.astype(np.float64)
        elif kinds == {str} and "\x00" not in "".join(col):  # numpy's str dtype drops trailing NULs
            cols[str(k)] = col.astype(str)
        else:
            cols[str(k)] = as_columns({k: list(col)})[1][str(k)]
    return cols


class _Group:
    __slots__ = ("obs", "dict_rows", "dict_outs", "arr_rows", "arr_outs", "unsampled", "latency")

    def __init__(self, obs: tuple[str, str, str]) -> None:
        self.obs = obs
        self.dict_rows: list[Mapping[str, Any]] = []
        self.dict_outs: list[dict[str, Any]] = []
        self.arr_rows: list[np.ndarray] = []
        self.arr_outs: list[dict[str, Any]] = []
        self.unsampled = 0
        self.latency: list[float] = []


class RowFolder:
    """Folds columns and buffered rows into a windower's windows; owns no lock (its owner holds one)."""

    def __init__(self, windower: Windower, streams: StreamTable, reject: Reject, closed: ClosedSink, *,
                 max_features: int = 2000, feature_names: Sequence[str] | None = None,
                 output_names: Sequence[str] | None = None) -> None:
        self.windower = windower
        self.streams = streams
        self.reject = reject
        self.closed = closed
        self.max_features = max_features
        self.feature_names = list(feature_names) if feature_names is not None else None
        self.output_names = list(output_names) if output_names is not None else None
        self.dropped_columns = 0
        self.shed_rows = 0
        self._ratelog = RateLimitedLog(log)
        self.predictions: Callable[[Any, StreamKey, float, Any, float], None] | None = None
        """Where a folded row with a ``request_id`` goes (id, stream, window start, outputs, now): the
        delayed-label tracker, which joins labels to it later."""
        self.reconstruction: Callable[[StreamKey], ReconstructionModel | None] | None = None
        """The reference's reconstruction model of a stream, if any: each folded batch's per-row errors are sketched."""

    def row_outputs(self, outs: Any) -> dict[str, Any]:
        """One row's outputs as a name -> value mapping."""
        if outs is None:
            return {}
        if type(outs) is dict:  # observe_row copied it already
            return outs
        if isinstance(outs, Mapping):
            return dict(outs)
        names = self.output_names
        if isinstance(outs, _SCALARS) or outs is None:
            return {names[0] if names else "prediction": outs}
        arr = np.asarray(outs)
        if arr.ndim != 1:
            raise ObserveError(f"outputs of one row must be a mapping, scalar or 1-D, got shape {arr.shape}",
                               "wrong_type")
        if names and len(names) == len(arr):
            cols = names
        else:
            cols = ["prediction"] if len(arr) == 1 else [f"output_{i}" for i in range(len(arr))]
        return dict(zip(cols, arr.tolist(), strict=True))

    def fold_rows(self, items: list[tuple[Any, ...]], now: float) -> None:
        """Fold buffered rows ``(features, outputs, model, version, variant, device, cohort, request_id,
        latency_ms, event_time, observed_at, sampled)``."""
        groups: dict[tuple[StreamKey, float], _Group] = {}
        feats: Any
        for feats, outs, model, version, variant, device, cohort, rid, lat, et, t_obs, keep in items:
            try:
                key, obs = self.streams.key(model, version, variant, device, cohort)
                latency = None if lat is None else lat if type(lat) is float else float(lat)
                if keep:
                    if feats is None and outs is None:
                        raise ObserveError("a row needs features or outputs", "malformed")
                    out_row = self.row_outputs(outs)
                    if type(feats) is dict or feats is None or isinstance(feats, Mapping):
                        kind = "dict"
                    elif isinstance(feats, np.ndarray | list | tuple):
                        feats = np.asarray(feats)
                        if feats.ndim != 1:
                            raise ObserveError(f"one row must be 1-D, got shape {feats.shape}", "malformed")
                        kind = "arr"
                    else:
                        raise ObserveError(f"features must be a mapping or a 1-D array, got "
                                           f"{type(feats).__name__}", "wrong_type")
                start = self.windower.assign(t_obs if et is None else event_time_value(et), now)
            except Exception as exc:
                self.reject(exc)
                continue
            if rid is not None and self.predictions is not None:
                self.predictions(rid, key, start, outs, now)
            g = groups.get((key, start))
            if g is None:
                g = groups[(key, start)] = _Group(obs)
            if latency is not None:
                g.latency.append(latency)
            if not keep:
                g.unsampled += 1
                if keep is None:
                    self.shed_rows += 1
            elif kind == "dict":
                g.dict_rows.append(feats or {})
                g.dict_outs.append(out_row)
            else:
                g.arr_rows.append(feats)
                g.arr_outs.append(out_row)
        for (key, start), g in groups.items():
            self._fold_group(key, start, g)

    def _fold_group(self, key: StreamKey, start: float, g: _Group) -> None:
        if g.unsampled or g.latency:
            self.fold(key, start, g.obs, {}, {}, rows=g.unsampled, latency=g.latency or None)
        if g.dict_rows:
            try:
                self._fold_rows(key, start, g.obs, g.dict_rows, g.dict_outs)
            except Exception:
                for row, out in zip(g.dict_rows, g.dict_outs, strict=True):
                    self._fold_one(key, start, g.obs, [row], [out])
        if g.arr_rows:
            try:
                width = {len(r) for r in g.arr_rows}
                if len(width) != 1:
                    raise ObserveError("rows have different lengths", "malformed")
                self._fold_rows(key, start, g.obs, np.vstack(g.arr_rows), g.arr_outs)
            except Exception:
                for arow, out in zip(g.arr_rows, g.arr_outs, strict=True):
                    self._fold_one(key, start, g.obs, arow.reshape(1, -1), [out])

    def _fold_one(self, key: StreamKey, start: float, obs: Obs, feats: Any, outs: Any) -> None:
        try:
            self._fold_rows(key, start, obs, feats, outs)
        except Exception as exc:
            self.reject(exc)

    def _fold_rows(self, key: StreamKey, start: float, obs: Obs, feats: Any, outs: list[dict[str, Any]]) -> None:
        """Rows of one group (row dicts or a 2-D array, and their output dicts) as columns, folded."""
        fcols: dict[str, np.ndarray] = {}
        ocols: dict[str, np.ndarray] = {}
        names = self.feature_names
        if isinstance(feats, np.ndarray) and (names is None or len(names) != feats.shape[1]):
            names = None
        fcols = rows_to_columns(feats) if isinstance(feats, list) else as_columns(feats, names)[1]
        if any(outs):
            ocols = rows_to_columns(outs)
        self.fold(key, start, obs, fcols, ocols, rows=len(feats))

    def fold(self, key: StreamKey, start: float, obs: Obs, fcols: dict[str, np.ndarray],
             ocols: dict[str, np.ndarray], *, rows: int, latency: Any = None, errors: int = 0) -> None:
        """The fold step: ``rows`` rows (before sampling) of a stream into its window starting at ``start``.

        Columns past the per-window bound are dropped and counted, the stream's exact row counter
        grows by ``rows``, and a window that reached its size bound goes to the closed-window sink.
        """
        fcols, ocols = self.cap_columns(key, start, fcols, ocols)
        if fcols and self.reconstruction is not None:
            try:
                self._sketch_errors(key, start, fcols)
            except Exception as exc:  # multivariate drift must never cost the rows themselves
                self._ratelog.warning("reconstruction", "reconstruction errors not sketched: %s", exc)
        with np.errstate(all="ignore"):  # huge values overflow sums and float32 casts: counted, not warned
            closed = self.windower.fold(key, start, fcols or None, ocols or None, rows_observed=rows,
                                        latency_ms=latency, errors=errors)
        self.streams.count(obs, rows)
        if closed:
            self.closed(closed)

    def _sketch_errors(self, key: StreamKey, start: float, fcols: dict[str, np.ndarray]) -> None:
        """Per-row reconstruction errors of one batch into the window's ``reconstruction`` sketch (one matrix product)."""
        assert self.reconstruction is not None
        model = self.reconstruction(key)
        if model is None:
            return
        n = len(next(iter(fcols.values())))
        w = self.windower.window(key, start)
        with np.errstate(all="ignore"):
            errors = model.errors(fcols, n)
        batch = ErrorSketch(model.digest).update(errors)
        if w.reconstruction is None:
            w.reconstruction = batch
        else:  # another model (the reference changed mid-window): the larger side wins, as in a merge
            w.reconstruction.merge_into(batch)

    def cap_columns(self, key: StreamKey, start: float, fcols: dict[str, np.ndarray],
                    ocols: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Drop columns past ``max_features`` per window (and absurdly long names), counting them."""
        if not fcols and not ocols:
            return fcols, ocols
        w = self.windower.window(key, start)
        out = []
        for cols, have in ((fcols, w.features), (ocols, w.outputs)):
            new = [c for c in cols if c not in have]
            room = self.max_features - len(have)
            bad = [c for c in new if not name_ok(str(c), MAX_COLUMN_NAME)]  # the service refuses these names
            if len(new) > room or bad:
                drop = set(bad) | set([c for c in new if c not in bad][max(room, 0):])
                self.dropped_columns += len(drop)
                self._ratelog.warning("columns", "ignored %d new columns (limit %d per window, names up to %d "
                                      "characters)", len(drop), self.max_features, MAX_COLUMN_NAME)
                cols = {k: v for k, v in cols.items() if k not in drop}
            out.append(cols)
        return out[0], out[1]
