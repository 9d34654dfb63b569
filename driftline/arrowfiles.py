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

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NUMBER_PATTERN", "PIECE_BYTES", "STREAM_CSV_BYTES", "ArrowTable", "arrow_available"]

STREAM_CSV_BYTES = 32 << 20
"""CSV files larger than this are streamed (bounded memory) with types from a sample spread across
the file: the first 1 MiB and ``SAMPLE_BLOCKS`` more 256 KiB slices at even offsets. Smaller files
are read whole and typed from every row."""
SAMPLE_BLOCKS = 31
PIECE_BYTES = 64 << 20
"""A streamed CSV is parsed in line-aligned pieces of about this size (the memory it holds at once)."""
_CONVERSION = re.compile(r"CSV column #(\d+)")
_SAMPLE_BYTES: dict[Path, int] = {}

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
        self._stream: dict[str, Any] | None = None
        if fmt == "csv":
            import pyarrow.csv as pcsv

            self._csv_args = {
                "parse_options": pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                # only empty cells are missing, as in the standard-library reader ("nan" is a NaN)
                "null_values": [""],
            }
            sample = _csv_sample(path, delimiter) if size > STREAM_CSV_BYTES else None
            if sample is not None:
                self.table = sample
                self._stream = {"types": {n: sample.schema.field(n).type for n in sample.column_names},
                                "row_bytes": _SAMPLE_BYTES.get(path, 0) / max(sample.num_rows, 1)}
            else:
                self.table = pcsv.read_csv(
                    path,
                    read_options=pcsv.ReadOptions(block_size=_block_size(size), use_threads=True),
                    parse_options=self._csv_args["parse_options"],
                    convert_options=pcsv.ConvertOptions(null_values=[""], strings_can_be_null=True,
                                                        quoted_strings_can_be_null=True),
                )
        elif fmt == "jsonl":
            import pyarrow.json as pjson

            self.table = pjson.read_json(path, read_options=pjson.ReadOptions(block_size=_block_size(size)))
        else:
            import pyarrow.parquet as pq

            # Parquet types are the file's own: stream row groups, read only text columns whole (to
            # decide numbers-with-text versus labels once for the column)
            pf = pq.ParquetFile(path)
            schema = pf.schema_arrow
            text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                    or pa.types.is_dictionary(f.type)]
            texts = pf.read(columns=text, use_threads=True) if text else None
            self._plans = {f.name: _plan(f.type, texts.column(f.name) if texts is not None and f.name in text
                                         else None, pa) for f in schema}
            self._parquet = pf
            self.table = None
            self.num_rows = int(pf.metadata.num_rows)
            self.names_ = [str(f.name) for f in schema]
            return
        self._parquet = None
        self._plans = {name: _plan(self.table.column(name).type, self.table.column(name), pa)
                       for name in self.table.column_names}
        # streamed: rows unknown until read (progress counts bytes); the sample is dropped
        self.num_rows = -1 if self._stream is not None else int(self.table.num_rows)
        self.names_ = [str(n) for n in self.table.column_names]
        if self._stream is not None:
            self.table = None

    @property
    def names(self) -> list[str]:
        return self.names_

    def kinds(self) -> dict[str, str]:
        """``numeric`` / ``categorical`` per column from its whole-file type (all-null columns left out)."""
        return {n: p for n, (p, _) in self._plans.items() if p in ("numeric", "categorical")}

    def batches(self, batch_rows: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        if self._stream is not None:
            yield from self._stream_batches()
            return
        done = 0
        if self._parquet is not None:
            if self.num_rows == 0:
                yield {n: np.empty(0, dtype=object) for n in self.names}, 0
                return
            for rb in self._parquet.iter_batches(batch_size=max(batch_rows, 1), use_threads=True):
                cols = {str(n): _convert(rb.column(i), self._plans[n]) for i, n in enumerate(rb.schema.names)}
                done += rb.num_rows
                yield cols, done
            return
        if self.num_rows == 0:
            yield {n: np.empty(0, dtype=object) for n in self.names}, 0
            return
        for rb in self.table.to_batches():
            for start in range(0, rb.num_rows, max(batch_rows, 1)):
                part = rb.slice(start, batch_rows) if rb.num_rows > batch_rows else rb
                cols = {str(n): _convert(part.column(i), self._plans[n]) for i, n in enumerate(rb.schema.names)}
                done += part.num_rows
                yield cols, done


    def _stream_batches(self) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        """Read the CSV in line-aligned pieces of ``PIECE_BYTES``, each parsed by pyarrow's
        multi-threaded reader with the sample's types (bounded memory at whole-file speed: a
        streaming reader parses one block at a time and is ~1.5x slower). A piece with a quote
        character might split a quoted newline, so from the first such piece on, the file is
        streamed by pyarrow's incremental reader. A later cell that does not fit its numeric type
        turns that column to text-with-numbers (wrong-typed values counted) and the piece is parsed
        again."""
        import pyarrow as pa
        import pyarrow.csv as pcsv

        assert self._stream is not None
        types: dict[str, Any] = {n: (pa.string() if pa.types.is_null(t) else t) for n, t in self._stream["types"].items()}
        size = self.path.stat().st_size

        def options(block: int) -> dict[str, Any]:
            return {"read_options": pcsv.ReadOptions(block_size=block, use_threads=True, column_names=self.names_),
                    "parse_options": self._csv_args["parse_options"],
                    "convert_options": pcsv.ConvertOptions(column_types=types, null_values=[""],
                                                           strings_can_be_null=True, quoted_strings_can_be_null=True)}

        def widen(exc: Exception) -> None:
            m = _CONVERSION.search(str(exc))
            if not m:
                raise exc
            name = self.names_[int(m.group(1))]
            if types[name] == pa.string():
                raise exc
            types[name] = pa.string()
            self._plans[name] = ("numeric", "mixed")

        def columns(rb: Any) -> dict[str, np.ndarray]:
            return {n: _convert(rb.column(i), self._batch_plan(n, rb.column(i))) for i, n in enumerate(self.names_)}

        with self.path.open("rb") as fh:
            fh.readline()  # the header: names come from the sample
            offset = fh.tell()
            while offset < size:
                piece = fh.read(PIECE_BYTES)
                if len(piece) == PIECE_BYTES:
                    piece += fh.readline()  # to the end of the line
                if b'"' in piece:
                    break
                while True:
                    try:
                        table = pcsv.read_csv(io.BytesIO(piece), **options(_block_size(len(piece))))
                        break
                    except pa.ArrowInvalid as exc:
                        widen(exc)
                offset += len(piece)
                del piece
                for rb in table.to_batches():
                    yield columns(rb), offset
                del table
            if offset >= size:
                return
        # from the first quoted piece on: pyarrow's streaming reader, resumed after the rows read
        done = 0
        while True:
            with self.path.open("rb") as fh:
                fh.seek(offset)
                reader = pcsv.open_csv(fh, **options(4 << 20))
                skip = done
                try:
                    for rb in reader:
                        if skip >= rb.num_rows:
                            skip -= rb.num_rows
                            continue
                        if skip:
                            rb, skip = rb.slice(skip), 0
                        done += rb.num_rows
                        yield columns(rb), min(offset + int(done * self._stream["row_bytes"]), size)
                    return
                except pa.ArrowInvalid as exc:
                    widen(exc)

    def _batch_plan(self, name: str, arr: Any) -> tuple[str, str]:
        plan = self._plans[name]
        if plan[1] == "null":  # all null in the sample: read as text, the profile decides the kind
            return ("unknown", "mixed" if _mostly_numbers(arr) else "text")
        return plan


def _mostly_numbers(arr: Any) -> bool:
    import pyarrow.compute as pc

    present = len(arr) - arr.null_count
    if not present:
        return False
    numbers = pc.sum(pc.match_substring_regex(arr, NUMBER_PATTERN, ignore_case=True)).as_py() or 0
    return numbers >= present - numbers


def _csv_sample(path: Path, delimiter: str) -> Any:
    """The header, the first 1 MiB and SAMPLE_BLOCKS slices at even offsets, parsed as one table;
    None when the slices do not parse (quoted newlines, say): then the whole file is read."""
    import pyarrow.csv as pcsv

    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(1 << 20)
        cut = head.rfind(b"\n")
        if cut < 0:
            return None
        parts = [head[: cut + 1]]
        for i in range(1, SAMPLE_BLOCKS + 1):
            fh.seek(size * i // (SAMPLE_BLOCKS + 1))
            fh.readline()  # to the next line start
            chunk = fh.read(256 << 10)
            end = chunk.rfind(b"\n")
            if end > 0:
                parts.append(chunk[: end + 1])
    data = b"".join(parts)
    _SAMPLE_BYTES[path] = len(data)
    try:
        return pcsv.read_csv(
            io.BytesIO(data),
            parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=False),
            convert_options=pcsv.ConvertOptions(null_values=[""], strings_can_be_null=True,
                                                quoted_strings_can_be_null=True))
    except Exception:
        return None


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
