"""Fold buffered single rows into windows, a batch per (stream, window) at a time.

The monitor's background thread hands over everything buffered since the last tick. Rows are
grouped by stream and window, turned into columns once per group, and folded with one vectorised
update per column. A group that fails as a whole is retried row by row, so one bad row is one
counted rejection and never costs its neighbours their place in the totals.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from driftline.batch import as_columns
from driftline.profile import StreamKey
from driftline.wirecheck import name_ok

from .errors import ObserveError
from .inputs import event_time_value
from .ratelog import RateLimitedLog

if TYPE_CHECKING:
    from .monitor import Monitor

__all__ = ["RowFolder"]

log = logging.getLogger("driftline.sidecar.monitor")
MAX_COLUMN_NAME = 256
_SCALARS = (str, bytes, bool, int, float, np.generic)


_NUMBER_TYPES = frozenset({float, int, np.float64, np.float32, np.int64, np.int32})


def rows_to_columns(rows: list[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Columns of row dicts, as :func:`driftline.batch.as_columns` makes them, faster for one shared schema.

    Rows with the same keys (the usual case) are unpacked in C (``itemgetter`` into a 2-D object array);
    a column whose values are all plain numbers becomes float64, all strings a string array. Anything
    else, and rows with differing keys, take the core's general path, so the result is the same.
    """
    keys = tuple(rows[0])
    if not keys or any(len(r) != len(keys) for r in rows) or any(tuple(r) != keys for r in rows):
        return as_columns(rows)[1]
    getter = operator.itemgetter(*keys)
    table = np.empty((len(rows), len(keys)), dtype=object)
    table[:] = list(map(getter, rows)) if len(keys) > 1 else [(getter(r),) for r in rows]
    cols: dict[str, np.ndarray] = {}
    for j, k in enumerate(keys):
        col = table[:, j]
        kinds = set(map(type, col))
        if kinds <= _NUMBER_TYPES:
            cols[str(k)] = col.astype(np.float64)
        elif kinds == {str}:
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
    """The monitor's row-batching half; owns no lock (the monitor holds its lock while calling in)."""

    def __init__(self, monitor: Monitor, max_features: int) -> None:
        self.m = monitor
        self.max_features = max_features
        self.dropped_columns = 0
        self.shed_rows = 0
        self._ratelog = RateLimitedLog(log)

    def row_outputs(self, outs: Any) -> dict[str, Any]:
        """One row's outputs as a name -> value mapping."""
        if outs is None:
            return {}
        if type(outs) is dict:  # observe_row copied it already
            return outs
        if isinstance(outs, Mapping):
            return dict(outs)
        names = self.m.output_names
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
        m = self.m
        groups: dict[tuple[StreamKey, float], _Group] = {}
        feats: Any
        for feats, outs, model, version, variant, device, cohort, _rid, lat, et, t_obs, keep in items:
            try:
                key, obs = m.stream_key(model, version, variant, device, cohort)
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
                start = m.windower.assign(t_obs if et is None else event_time_value(et), now)
            except Exception as exc:
                m.reject(exc)
                continue
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
            self._fold(key, start, g.obs, None, None, g.unsampled, g.latency or None)
        if g.dict_rows:
            try:
                self._fold(key, start, g.obs, g.dict_rows, g.dict_outs, len(g.dict_rows), None)
            except Exception:
                for row, out in zip(g.dict_rows, g.dict_outs, strict=True):
                    self._fold_one(key, start, g.obs, [row], [out])
        if g.arr_rows:
            try:
                width = {len(r) for r in g.arr_rows}
                if len(width) != 1:
                    raise ObserveError("rows have different lengths", "malformed")
                self._fold(key, start, g.obs, np.vstack(g.arr_rows), g.arr_outs, len(g.arr_rows), None)
            except Exception:
                for arow, out in zip(g.arr_rows, g.arr_outs, strict=True):
                    self._fold_one(key, start, g.obs, arow.reshape(1, -1), [out])

    def _fold_one(self, key: StreamKey, start: float, obs: tuple[str, str, str], feats: Any, outs: Any) -> None:
        try:
            self._fold(key, start, obs, feats, outs, 1, None)
        except Exception as exc:
            self.m.reject(exc)

    def _fold(self, key: StreamKey, start: float, obs: tuple[str, str, str], feats: Any, outs: Any,
              rows: int, latency: list[float] | None) -> None:
        m = self.m
        fcols: dict[str, np.ndarray] = {}
        ocols: dict[str, np.ndarray] = {}
        if feats is not None:
            names = m.feature_names
            if isinstance(feats, np.ndarray) and (names is None or len(names) != feats.shape[1]):
                names = None
            fcols = rows_to_columns(feats) if isinstance(feats, list) else as_columns(feats, names)[1]
        if outs is not None and any(outs):
            ocols = rows_to_columns(outs)
        fcols, ocols = self.cap_columns(key, start, fcols, ocols)
        with np.errstate(all="ignore"):  # huge values overflow sums and float32 casts: counted, not warned
            closed = m.windower.fold(key, start, fcols or None, ocols or None, rows_observed=rows,
                                     latency_ms=latency)
        m.streams.count(obs, rows)
        m._closed_windows(closed)

    def cap_columns(self, key: StreamKey, start: float, fcols: dict[str, np.ndarray],
                    ocols: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Drop columns past ``max_features`` per window (and absurdly long names), counting them."""
        if not fcols and not ocols:
            return fcols, ocols
        w = self.m.windower.window(key, start)
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
