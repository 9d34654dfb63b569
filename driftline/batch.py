"""Turn what callers hand us (numpy arrays, dicts of columns, rows, pandas frames) into typed columns.

This is the only place that looks at user containers; everything downstream sees one
``dict[str, ColumnData]`` with numpy arrays and exact counts of missing and wrong-typed values.
Vectorised for the common cases (float/int arrays); object arrays fall back to one pass in Python.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from .errors import BatchError

__all__ = ["ColumnData", "as_columns", "categorical_data", "infer_kind", "numeric_data"]


@dataclass(slots=True)
class ColumnData:
    """One column of a batch, cleaned for one kind of summary."""

    values: np.ndarray
    missing: int = 0
    invalid: int = 0


def _is_pandas_frame(obj: Any) -> bool:
    return type(obj).__name__ == "DataFrame" and hasattr(obj, "columns") and hasattr(obj, "to_numpy")


def as_columns(batch: Any, names: Sequence[str] | None = None) -> tuple[int, dict[str, np.ndarray]]:
    """Return (row count, columns) for one row or a batch; raise :class:`BatchError` if unreadable.

    Accepted: a mapping of column name to scalar (one row) or to a sequence/array (a batch); a
    2-D numpy array (with ``names``, else ``f0..fN``); a 1-D array (one row); a sequence of row
    mappings; a pandas DataFrame.
    """
    if batch is None:
        return 0, {}
    if _is_pandas_frame(batch):
        return len(batch), {str(c): batch[c].to_numpy() for c in batch.columns}
    if isinstance(batch, np.ndarray):
        arr = batch
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2:
            raise BatchError(f"expected a 1-D or 2-D array, got {arr.ndim}-D")
        n_cols = arr.shape[1]
        col_names = list(names) if names is not None else [f"f{i}" for i in range(n_cols)]
        if len(col_names) != n_cols:
            raise BatchError(f"array has {n_cols} columns but {len(col_names)} names were given")
        return arr.shape[0], {str(n): arr[:, i] for i, n in enumerate(col_names)}
    if isinstance(batch, Mapping):
        if not batch:
            return 0, {}
        cols: dict[str, np.ndarray] = {}
        n_rows: int | None = None
        scalar = all(_is_scalar(v) for v in batch.values())
        for key, value in batch.items():
            if scalar:
                arr = np.empty(1, dtype=object)
                arr[0] = value
                arr = _tighten(arr)
            else:
                if _is_scalar(value):
                    raise BatchError(f"column {key!r} is a scalar while other columns are sequences")
                arr = value if isinstance(value, np.ndarray) else _to_array(value)
                if arr.ndim != 1:
                    raise BatchError(f"column {key!r} must be 1-D, got shape {arr.shape}")
            if n_rows is None:
                n_rows = len(arr)
            elif len(arr) != n_rows:
                raise BatchError(f"column {key!r} has {len(arr)} rows, expected {n_rows}")
            cols[str(key)] = arr
        return int(n_rows or 0), cols
    if isinstance(batch, Sequence) and not isinstance(batch, str | bytes):
        if not batch:
            return 0, {}
        if all(isinstance(r, Mapping) for r in batch):
            keys: dict[str, None] = {}
            for r in batch:
                for k in r:
                    keys.setdefault(str(k), None)
            cols = {}
            for k in keys:
                arr = np.empty(len(batch), dtype=object)
                arr[:] = [r.get(k) for r in batch]
                cols[k] = _tighten(arr)
            return len(batch), cols
        return as_columns(np.asarray(batch), names)
    raise BatchError(f"cannot read observations from a {type(batch).__name__}")


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | bytes | bool | int | float | np.generic)


def _to_array(value: Any) -> np.ndarray:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise BatchError(f"expected a sequence of values, got {type(value).__name__}")
    arr = np.empty(len(value), dtype=object)
    arr[:] = list(value)
    return _tighten(arr)


def _tighten(arr: np.ndarray) -> np.ndarray:
    """Give an object array a numeric dtype when every value is a plain number."""
    if arr.size and all(isinstance(v, int | float) and not isinstance(v, bool) for v in arr.tolist()):
        return arr.astype(np.float64)
    return arr


def infer_kind(arr: np.ndarray) -> str:
    """``numeric`` when most present values are numbers (bools excluded), else ``categorical``.

    Majority, not unanimity: one stray string in a numeric column is a wrong-typed value to count,
    not a reason to treat the column as categorical. All-missing columns are numeric.
    """
    if arr.dtype.kind in "fiu":
        return "numeric"
    if arr.dtype.kind in "bUS":
        return "categorical"
    numbers = others = 0
    for v in arr.tolist():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if isinstance(v, Real) and not isinstance(v, bool):
            numbers += 1
        else:
            others += 1
    return "numeric" if numbers >= others else "categorical"


def numeric_data(arr: np.ndarray) -> ColumnData:
    """Float64 values (NaN/inf kept for counting), with missing and wrong-typed values counted."""
    if arr.dtype.kind in "fiu":
        return ColumnData(arr.astype(np.float64, copy=False))
    if arr.dtype.kind == "b":
        return ColumnData(np.zeros(0), invalid=arr.size)
    out = np.empty(arr.size, dtype=np.float64)
    n = missing = invalid = 0
    for v in arr.tolist():
        if v is None:
            missing += 1
        elif isinstance(v, Real) and not isinstance(v, bool):
            out[n] = float(v)
            n += 1
        else:
            invalid += 1
    return ColumnData(out[:n], missing=missing, invalid=invalid)


def categorical_data(arr: np.ndarray) -> ColumnData:
    """String labels, with missing (None/NaN) and unhashable values counted."""
    if arr.dtype.kind == "f":
        nan = np.isnan(arr)
        n_missing = int(np.count_nonzero(nan))
        vals = arr[~nan] if n_missing else arr
        # integral floats read as "1", not "1.0" (the sketch canonicalises the rest per distinct label)
        small = np.abs(vals) < 2.0**53
        whole = small & (np.floor(vals) == vals)
        as_text = vals.astype(str).astype(object)
        if whole.any():
            as_text[whole] = vals[whole].astype(np.int64).astype(str)
        return ColumnData(as_text.astype(str), missing=n_missing)
    if arr.dtype.kind in "iuU":
        return ColumnData(arr.astype(str))
    if arr.dtype.kind == "b":
        return ColumnData(np.where(arr, "true", "false"))
    labels: list[str] = []
    missing = invalid = 0
    for v in arr.tolist():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            missing += 1
        elif isinstance(v, bool):
            labels.append("true" if v else "false")
        elif isinstance(v, str | int | float | np.generic):
            labels.append(str(v))
        elif isinstance(v, bytes):
            labels.append(v.decode("utf-8", "replace"))
        else:
            invalid += 1
    return ColumnData(np.asarray(labels, dtype=str), missing=missing, invalid=invalid)
