"""Read whole data files with pyarrow's multi-threaded readers and hand out numpy column batches.

The fast path of :mod:`driftline.datafiles` (used whenever pyarrow is installed; the ``sidecar`` extra
has none and keeps the standard-library readers). Types come from the **whole file**: Arrow infers one
type per column over every block, so leading nulls cannot make a text column numeric. How each Arrow
type becomes a batch column:

* integers, floats, decimals: float64 (nulls become NaN), zero-copy when the chunk has no nulls;
* timestamps, dates, durations: float64 epoch seconds (a numeric column);
* booleans: numpy bool (a categorical ``true``/``false`` column);
* strings: text labels, unless most non-empty cells are numbers (one stray ``oops`` in a numeric
  column), then numbers with the text kept as wrong-typed values, decided once for the whole column;
* all-null columns: all missing (their kind is left open, see ``WindowProfile``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NUMBER_PATTERN", "ArrowTable", "arrow_available"]

NUMBER_PATTERN = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$|^\s*[+-]?(nan|inf|infinity)\s*$"
"""Cells that count as numbers in a text column (case-insensitive), as Python's ``float`` reads them."""


def arrow_available() -> bool:
    """True when pyarrow can be imported (the ``service`` extra) and not disabled by ``DRIFTLINE_NO_PYARROW``."""
    if os.environ.get("DRIFTLINE_NO_PYARROW"):
        return False
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _block_size(size: int) -> int:
    """Big blocks give big batches (fewer sketch calls); at least ~16 of them keep both cores busy."""
    return int(min(max(size // 16, 1 << 20), 64 << 20))


class ArrowTable:
    """One file read into an Arrow table; ``batches`` yields numpy columns with whole-file types."""

    def __init__(self, path: Path, fmt: str, delimiter: str = ",") -> None:
        import pyarrow as pa

        self.path = path
        size = path.stat().st_size
        if fmt == "csv":
            import pyarrow.csv as pcsv

            self.table = pcsv.read_csv(
                path,
                read_options=pcsv.ReadOptions(block_size=_block_size(size), use_threads=True),
                parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                # only empty cells are missing, as in the standard-library reader ("nan" is a NaN)
                convert_options=pcsv.ConvertOptions(null_values=[""], strings_can_be_null=True,
                                                    quoted_strings_can_be_null=True),
            )
        elif fmt == "jsonl":
            import pyarrow.json as pjson

            self.table = pjson.read_json(path, read_options=pjson.ReadOptions(block_size=_block_size(size)))
        else:
            import pyarrow.parquet as pq

            self.table = pq.read_table(path, use_threads=True)
        self.num_rows = int(self.table.num_rows)
        self._plans = {name: _plan(self.table.column(name).type, self.table.column(name), pa)
                       for name in self.table.column_names}

    @property
    def names(self) -> list[str]:
        return [str(n) for n in self.table.column_names]

    def kinds(self) -> dict[str, str]:
        """``numeric`` / ``categorical`` per column from its whole-file type (all-null columns left out)."""
        return {n: p for n, (p, _) in self._plans.items() if p in ("numeric", "categorical")}

    def batches(self, batch_rows: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        done = 0
        if self.num_rows == 0:
            yield {n: np.empty(0, dtype=object) for n in self.names}, 0
            return
        for rb in self.table.to_batches():
            for start in range(0, rb.num_rows, max(batch_rows, 1)):
                part = rb.slice(start, batch_rows) if rb.num_rows > batch_rows else rb
                cols = {str(n): _convert(part.column(i), self._plans[n]) for i, n in enumerate(rb.schema.names)}
                done += part.num_rows
                yield cols, done


def _plan(typ: Any, column: Any, pa: Any) -> tuple[str, str]:
    """(kind, conversion) for one whole column."""
    t = pa.types
    if t.is_dictionary(typ):
        return _plan(typ.value_type, column.cast(typ.value_type), pa)
    if t.is_null(typ):
        return "unknown", "null"
    if t.is_integer(typ) or t.is_floating(typ) or t.is_decimal(typ):
        return "numeric", "float"
    if t.is_timestamp(typ) or t.is_date(typ) or t.is_time(typ) or t.is_duration(typ):
        return "numeric", "seconds"
    if t.is_boolean(typ):
        return "categorical", "bool"
    if t.is_string(typ) or t.is_large_string(typ):
        import pyarrow.compute as pc

        present = len(column) - column.null_count
        if present == 0:
            return "unknown", "null"
        numbers = pc.sum(pc.match_substring_regex(column, NUMBER_PATTERN, ignore_case=True)).as_py() or 0
        return ("numeric", "mixed") if numbers >= present - numbers else ("categorical", "text")
    return "categorical", "object"


def _float64(arr: Any) -> np.ndarray:
    """A float64 Arrow array as numpy, nulls as NaN, straight from its buffers.

    Zero-copy without nulls. (``Array.to_numpy`` would import pandas, a second of start-up.)
    """
    data = np.frombuffer(arr.buffers()[1], dtype=np.float64, count=len(arr), offset=arr.offset * 8)
    if arr.null_count:
        bits = np.unpackbits(np.frombuffer(arr.buffers()[0], dtype=np.uint8), bitorder="little")
        data = np.where(bits[arr.offset: arr.offset + len(arr)].astype(bool), data, np.nan)
    return data


def _objects(arr: Any) -> np.ndarray:
    out = np.empty(len(arr), dtype=object)
    out[:] = arr.to_pylist()
    return out


def _convert(arr: Any, plan: tuple[str, str]) -> np.ndarray:
    import pyarrow as pa

    _, how = plan
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if how == "float":
        return _float64(arr if pa.types.is_float64(arr.type) else arr.cast(pa.float64(), safe=False))
    if how == "seconds":
        typ = arr.type
        if pa.types.is_date(typ):
            arr = arr.cast(pa.timestamp("s"))
            typ = arr.type
        unit = getattr(typ, "unit", "s")
        ticks = _float64(arr.cast(pa.int64()).cast(pa.float64()))
        return ticks / {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[unit]
    if how == "null":
        return np.full(len(arr), None, dtype=object)
    if how == "mixed":
        # numbers where the cell reads as one, the text itself (a wrong-typed value) elsewhere
        out = _objects(arr)
        for i, v in enumerate(out.tolist()):
            if v is not None:
                try:
                    out[i] = float(v)
                except ValueError:
                    pass
        return out
    return _objects(arr)
