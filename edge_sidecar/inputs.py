"""Small pure helpers that turn what callers pass into what the windows need.

Event times in any common form become epoch seconds (NaN when unusable, which the windower counts);
model outputs in the shapes people actually pass (a scalar, a 1-D prediction array) become named
columns; stream labels are checked for type and length so a garbage label is a counted rejection,
not an unbounded metric label.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from driftline.wirecheck import name_ok

from .errors import ObserveError

__all__ = [
    "MAX_NAME_CHARS",
    "event_time_array",
    "event_time_value",
    "label",
    "normalise_outputs",
    "take",
]

MAX_NAME_CHARS = 128
_NAN = float("nan")


def event_time_value(t: Any) -> float:
    """Epoch seconds from a number, datetime, numpy datetime64 or ISO-8601 string; NaN if unusable."""
    if t is None:
        return _NAN
    if isinstance(t, bool):
        return _NAN
    if isinstance(t, int | float | np.integer | np.floating):
        return float(t)
    if isinstance(t, datetime):
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
    if isinstance(t, np.datetime64):
        if np.isnat(t):
            return _NAN
        return float(t.astype("datetime64[ns]").astype(np.int64)) / 1e9
    if isinstance(t, str):
        try:
            return event_time_value(datetime.fromisoformat(t.strip()))
        except ValueError:
            try:
                return float(t)
            except ValueError:
                return _NAN
    ts = getattr(t, "timestamp", None)  # pandas Timestamp
    if callable(ts):
        try:
            return float(ts())
        except (TypeError, ValueError, OverflowError):
            return _NAN
    return _NAN


def event_time_array(times: Any, n: int) -> np.ndarray:
    """Per-row epoch seconds for ``n`` rows (NaN where unusable); raises ObserveError on a length mismatch."""
    if hasattr(times, "to_numpy"):
        times = times.to_numpy()
    arr = np.asarray(times) if not isinstance(times, np.ndarray) else times
    if arr.ndim != 1 or len(arr) != n:
        raise ObserveError(f"event_time has {arr.size} values for {n} rows", "malformed")
    if arr.dtype.kind == "M":
        ns = arr.astype("datetime64[ns]")
        out = ns.astype(np.int64).astype(np.float64) / 1e9
        out[np.isnat(ns)] = np.nan
        return out
    if arr.dtype.kind in "fiu":
        return arr.astype(np.float64)
    return np.fromiter((event_time_value(v) for v in arr.tolist()), dtype=np.float64, count=n)


def normalise_outputs(outputs: Any, n: int, names: Sequence[str] | None) -> Any:
    """Give unnamed outputs names: a scalar or a 1-D array of one value per row becomes ``prediction``.

    A 1-D array for a single row with several values becomes ``output_0..k`` (or ``names``).
    Dicts, 2-D arrays and frames pass through unchanged.
    """
    if outputs is None or isinstance(outputs, Mapping):
        return outputs
    if isinstance(outputs, str | bytes | bool | int | float | np.generic):
        return {names[0] if names else "prediction": [outputs] * max(n, 1)}
    if hasattr(outputs, "to_numpy") and not hasattr(outputs, "columns"):  # a pandas Series
        outputs = outputs.to_numpy()
    if isinstance(outputs, Sequence) and outputs and isinstance(outputs[0], Mapping):
        return outputs
    arr = outputs if isinstance(outputs, np.ndarray) else np.asarray(outputs)
    if arr.ndim == 1:
        if n > 1 and len(arr) == n:
            return {names[0] if names else "prediction": arr}
        cols = list(names) if names and len(names) == len(arr) else _output_names(len(arr))
        return {c: arr[i : i + 1] for i, c in enumerate(cols)}
    if arr.ndim == 2 and not names:
        cols = ["prediction"] if arr.shape[1] == 1 else _output_names(arr.shape[1])
        return {c: arr[:, i] for i, c in enumerate(cols)}
    return arr


def _output_names(k: int) -> list[str]:
    return ["prediction"] if k == 1 else [f"output_{i}" for i in range(k)]


def take(cols: dict[str, np.ndarray], idx: np.ndarray | None) -> dict[str, np.ndarray]:
    """The rows ``idx`` of every column (no copy when ``idx`` is None)."""
    if idx is None:
        return cols
    return {k: v[idx] for k, v in cols.items()}


def label(value: Any, field: str, default: str | None = None, *, allow_numbers: bool = False) -> str:
    """A stream label (model, version, variant, device): a short non-empty string, else ObserveError."""
    if value is None:
        if default is None:
            raise ObserveError(f"{field} is required", "malformed")
        return default
    if isinstance(value, str):
        text = value
    elif allow_numbers and isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        if isinstance(value, float | np.floating) and not math.isfinite(value):
            raise ObserveError(f"{field} must be a finite number or a string", "wrong_type")
        text = str(value)
    else:
        raise ObserveError(f"{field} must be a string, got {type(value).__name__}", "wrong_type")
    if not text:
        raise ObserveError(f"{field} must not be empty", "malformed")
    if len(text) > MAX_NAME_CHARS:
        raise ObserveError(f"{field} is longer than {MAX_NAME_CHARS} characters", "oversized")
    if not name_ok(text, MAX_NAME_CHARS):  # the wire format refuses control characters in names
        raise ObserveError(f"{field} contains control characters", "malformed")
    return text
