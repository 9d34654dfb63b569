"""Read training data and prediction logs (CSV, Parquet, JSON Lines) in column batches.

A shell around the core: it touches the file system, the core does not. Batches are dicts of numpy
arrays (floats where a column parses as numbers, strings otherwise), ready for
:meth:`driftline.profile.WindowProfile.update`.

With pyarrow installed every format is read by its multi-threaded reader, with column types inferred
from the whole file (:mod:`driftline.arrowfiles`); a CSV or JSON Lines file Arrow refuses is re-read
by the standard-library reader, which either reads it or names the bad line. Without pyarrow (the
``sidecar`` extra) CSV and JSON Lines use the standard library only; there a column's kind comes
from the first batch that has values in it, and Parquet needs pyarrow.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .arrowfiles import ArrowTable, arrow_available
from .batch import as_columns
from .errors import BatchError, DataFileError

__all__ = ["FORMATS", "DataFile", "detect_format"]

FORMATS = ("csv", "parquet", "jsonl")
_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def detect_format(path: Path) -> str:
    """Guess the format from the suffix (``.csv``, ``.parquet``, ``.jsonl``...) or the first bytes."""
    suffixes = [s.lower() for s in path.suffixes]
    for s in reversed(suffixes):
        if s in _SUFFIXES:
            return _SUFFIXES[s]
    with path.open("rb") as fh:
        head = fh.read(4)
    if head == b"PAR1":
        return "parquet"
    if head[:1] in (b"{", b"["):
        return "jsonl"
    return "csv"


class DataFile:
    """One data file read in batches; ``total`` and ``unit`` size a progress bar.

    ``engine`` is ``"arrow"`` (pyarrow, the default when installed) or ``"stdlib"``. With Arrow the
    file is read whole on first use (``total`` is then its row count) and :meth:`kinds` holds each
    column's whole-file kind.
    """

    def __init__(self, path: str | Path, fmt: str | None = None, engine: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataFileError(f"{self.path}: no such file")
        self.format = fmt or detect_format(self.path)
        if self.format not in FORMATS:
            raise DataFileError(f"{self.path}: unknown format {self.format!r} (expected one of {', '.join(FORMATS)})")
        self.engine = engine or ("arrow" if arrow_available() else "stdlib")
        if self.engine not in ("arrow", "stdlib"):
            raise DataFileError(f"unknown reader engine {self.engine!r} (arrow or stdlib)")
        if self.format == "parquet":
            self.engine = "arrow"
        self.total_bytes = self.path.stat().st_size
        self._arrow: ArrowTable | None = None
        self._arrow_failed = False
        self.unit = "B"
        self.total = self.total_bytes
        if self.engine == "arrow":
            table = self._table()
            if table is not None and table.num_rows >= 0:  # a streamed CSV counts bytes
                self.unit = "rows"
                self.total = table.num_rows

    def _table(self) -> ArrowTable | None:
        """The whole file as an Arrow table; None when Arrow refuses a CSV/JSONL file (stdlib decides)."""
        if self._arrow is not None or self._arrow_failed:
            return self._arrow
        if self.format == "parquet":
            self._parquet()  # a clear error when pyarrow is missing or the file is not Parquet
        if self.format == "csv" and self.total_bytes == 0:
            raise DataFileError(f"{self.path}: empty CSV file (no header row)")
        try:
            table = ArrowTable(self.path, self.format, "\t" if self.path.suffix.lower() == ".tsv" else ",")
        except OSError as exc:
            raise DataFileError(f"{self.path}: {exc}") from exc
        except Exception as exc:  # pyarrow.ArrowInvalid and friends: let the line-by-line reader name the line
            if self.format == "parquet":
                raise DataFileError(f"{self.path}: not a readable Parquet file ({exc})") from exc
            self._arrow_failed = True
            self.engine = "stdlib"
            return None
        if self.format == "csv" and len(set(table.names)) != len(table.names):
            raise DataFileError(f"{self.path}: duplicate column names in the header")
        self._arrow = table
        return table

    def kinds(self) -> dict[str, str]:
        """Whole-file column kinds (``numeric``/``categorical``) when Arrow read the file, else ``{}``."""
        table = self._table() if self.engine == "arrow" else None
        return table.kinds() if table is not None else {}

    def batches(self, batch_rows: int = 65536) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        """Yield ``(columns, done)``; ``done`` counts rows (Arrow) or bytes (stdlib CSV, JSONL) so far.

        A file with a header and no rows yields one batch of empty columns, so its columns exist.
        """
        table = self._table() if self.engine == "arrow" else None
        if table is not None:
            yield from table.batches(batch_rows)
            return
        reader = {"csv": self._csv, "parquet": self._parquet_batches, "jsonl": self._jsonl}[self.format]
        try:
            yield from reader(batch_rows)
        except DataFileError:
            raise
        except (OSError, UnicodeDecodeError, ValueError, csv.Error, BatchError) as exc:
            raise DataFileError(f"{self.path}: {exc}") from exc

    def read_all(self) -> dict[str, np.ndarray]:
        """All rows at once (small files, tests)."""
        parts = [b for b, _ in self.batches()]
        if not parts:
            return {}
        names = list(dict.fromkeys(k for p in parts for k in p))
        out = {}
        for n in names:
            arrs = [p.get(n, np.full(len(next(iter(p.values()))), None, dtype=object)) for p in parts]
            out[n] = np.concatenate(arrs) if all(a.dtype == arrs[0].dtype for a in arrs) else np.concatenate(
                [a.astype(object) for a in arrs]
            )
        return out

    # ---- CSV -------------------------------------------------------------------------------
    def _csv(self, batch_rows: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        with self.path.open("rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            reader = csv.reader(text, delimiter=delimiter)
            header = next(reader, None)
            if not header:
                raise DataFileError(f"{self.path}: empty CSV file (no header row)")
            if len(set(header)) != len(header):
                raise DataFileError(f"{self.path}: duplicate column names in the header")
            width = len(header)
            rows: list[list[str]] = []
            line = 1
            yielded = False
            for row in reader:
                line += 1
                if not row:
                    continue
                if len(row) != width:
                    raise DataFileError(f"{self.path}: line {line} has {len(row)} fields, the header has {width}")
                rows.append(row)
                if len(rows) >= batch_rows:
                    yield _csv_columns(header, rows), raw.tell()
                    yielded = True
                    rows = []
            if rows or not yielded:
                yield _csv_columns(header, rows), raw.tell()

    # ---- Parquet ---------------------------------------------------------------------------
    def _parquet(self) -> Any:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            from .errors import MissingExtraError

            raise MissingExtraError("pyarrow (for Parquet files)", "service") from None
        try:
            return pq.ParquetFile(self.path)
        except Exception as exc:  # pyarrow raises several unrelated types for bad files
            raise DataFileError(f"{self.path}: not a readable Parquet file ({exc})") from exc

    def _parquet_batches(self, batch_rows: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        pf = self._parquet()
        done = 0
        for rb in pf.iter_batches(batch_size=batch_rows):
            cols: dict[str, np.ndarray] = {}
            for name, arr in zip(rb.schema.names, rb.columns, strict=True):
                np_arr = arr.to_numpy(zero_copy_only=False)
                if np_arr.dtype.kind == "O":
                    np_arr = _tighten_objects(np_arr)
                cols[str(name)] = np_arr
            done += rb.num_rows
            yield cols, done

    # ---- JSON Lines --------------------------------------------------------------------------
    def _jsonl(self, batch_rows: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        with self.path.open("rb") as fh:
            rows: list[dict[str, Any]] = []
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataFileError(f"{self.path}: line {lineno} is not JSON ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise DataFileError(f"{self.path}: line {lineno} is not a JSON object")
                rows.append(obj)
                if len(rows) >= batch_rows:
                    yield as_columns(rows)[1], fh.tell()
                    rows = []
            if rows:
                yield as_columns(rows)[1], fh.tell()


def _csv_columns(header: list[str], rows: list[list[str]]) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        cols[name] = _parse_strings([r[j] for r in rows])
    return cols


def _parse_strings(values: list[str]) -> np.ndarray:
    """Floats (NaN for empty cells) when every non-empty cell is a number, else labels with None for empty."""
    if not values:
        return np.empty(0, dtype=object)
    try:
        return np.array([v if v.strip() else "nan" for v in values], dtype=np.float64)
    except ValueError:
        pass
    out = np.empty(len(values), dtype=object)
    n_numeric = n_text = 0
    for i, v in enumerate(values):
        s = v.strip()
        if not s:
            out[i] = None
            continue
        try:
            f = float(s)
        except ValueError:
            out[i] = v
            n_text += 1
            continue
        out[i] = f if math.isfinite(f) or s.lower() in ("nan", "inf", "-inf") else v
        n_numeric += 1
    if n_text and not n_numeric:
        return out  # plain text column, None for empty cells
    if n_text:
        return out  # mixed: numbers stay numbers, text is counted as wrong-typed downstream
    return out.astype(np.float64)


def _tighten_objects(arr: np.ndarray) -> np.ndarray:
    vals = arr.tolist()
    if vals and all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in vals):
        return np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
    return arr
