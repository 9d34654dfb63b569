"""Profiles from Spark DataFrames: one profile per partition on the executors, merged into one.

Training sets too big for one machine are profiled where they live. :func:`profile_dataframe` runs
the same code as a single-process ``driftline reference build`` (``WindowProfile.update`` on Arrow
batches converted by :mod:`driftline.arrowfiles`) inside ``mapInArrow``, once per partition; each
partition's profile leaves its executor as one binary row (the wire format's envelope), and the
rows are merged by tree aggregation on the executors (``merge="tree"``) or collected and merged on
the driver (``merge="driver"``, also for Spark Connect, which has no RDDs).

Column kinds are decided **once, for the whole DataFrame**, from its Spark schema (text columns by
one aggregate: numbers-with-text when most present cells read as numbers, as the single-process
reader decides), so every partition builds the same kinds and the partitions merge. Exact counters
(rows, missing, min, max, sums, categorical counts below the sketch's capacity) equal the
single-process build's; the KLL sketches are merged sketches, within their rank-error bound.

Needs the ``spark`` extra (pyspark) on the driver, and driftline importable on every executor.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .arrowfiles import NUMBER_PATTERN, _convert
from .errors import DataFileError, MissingExtraError, ProfileError
from .profile import ProfileConfig, StreamKey, WindowProfile
from .wire import Envelope, decode_envelope, encode_envelope

__all__ = ["MERGES", "column_plans", "profile_dataframe", "profile_parquet"]

MERGES = ("tree", "driver")
"""How partition profiles are combined: ``tree`` (``treeAggregate`` on the executors) or ``driver``."""
_MAX_PROFILE_BYTES = 1 << 30  # partition profiles come from our own executors: decoded as trusted


def _pyspark() -> Any:
    try:
        import pyspark.sql.functions as functions
    except ImportError:
        raise MissingExtraError("pyspark", "spark") from None
    return functions


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _type_plan(dtype: Any) -> tuple[str, str] | None:
    """(kind, conversion) from a Spark type as :func:`driftline.arrowfiles._plan` decides it from
    the Arrow type Spark sends; None for text, whose plan needs the data."""
    from pyspark.sql import types as T

    if isinstance(dtype, T.StringType | T.VarcharType | T.CharType):
        return None
    if isinstance(dtype, T.NullType):
        return "unknown", "null"
    if isinstance(dtype, T.NumericType):  # integers, floats, decimals
        return "numeric", "float"
    if isinstance(dtype, T.TimestampType | T.TimestampNTZType | T.DateType | T.DayTimeIntervalType):
        return "numeric", "seconds"
    if isinstance(dtype, T.BooleanType):
        return "categorical", "bool"
    return "categorical", "object"  # binary, arrays, maps, structs: labels or wrong-typed values


def _check_names(names: list[str]) -> None:
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ProfileError(f"the DataFrame has duplicate column names: {', '.join(dup)}")


def _arrow_ready(dtype: Any) -> bool:
    """Whether Spark hands this type to Python as Arrow (others, such as intervals of months or
    variants, are cast to text first: labels, not a failed job)."""
    from pyspark.sql import types as T

    simple = (T.NumericType, T.StringType, T.VarcharType, T.CharType, T.BooleanType, T.BinaryType, T.DateType,
              T.TimestampType, T.TimestampNTZType, T.DayTimeIntervalType, T.NullType)
    if isinstance(dtype, simple):
        return True
    if isinstance(dtype, T.ArrayType):
        return _arrow_ready(dtype.elementType)
    if isinstance(dtype, T.MapType):
        return _arrow_ready(dtype.keyType) and _arrow_ready(dtype.valueType)
    if isinstance(dtype, T.StructType):
        return all(_arrow_ready(f.dataType) for f in dtype.fields)
    return False


def column_plans(df: Any) -> dict[str, tuple[str, str]]:
    """Each column's (kind, conversion) for the whole DataFrame; text columns cost one aggregate.

    A text column is numeric (``mixed``: numbers, with the rest counted as wrong-typed values) when
    at least half of its present cells match :data:`~driftline.arrowfiles.NUMBER_PATTERN`, else
    categorical; an all-null text column is left ``unknown``, as in a file.
    """
    F = _pyspark()
    _check_names(df.columns)
    plans: dict[str, tuple[str, str] | None] = {f.name: _type_plan(f.dataType) for f in df.schema.fields}
    text = [n for n, p in plans.items() if p is None]
    if text:
        aggs = []
        for i, name in enumerate(text):
            c = F.col(_quoted(name))
            aggs.append(F.count(c).alias(f"present{i}"))
            aggs.append(F.count(F.when(c.rlike("(?i)" + NUMBER_PATTERN), 1)).alias(f"numbers{i}"))
        row = df.agg(*aggs).first()
        for i, name in enumerate(text):
            present, numbers = int(row[f"present{i}"] or 0), int(row[f"numbers{i}"] or 0)
            if present == 0:
                plans[name] = ("unknown", "null")
            else:
                plans[name] = ("numeric", "mixed") if numbers >= present - numbers else ("categorical", "text")
    return {n: p for n, p in plans.items() if p is not None}


@dataclass(frozen=True)
class _PartitionProfiler:
    """The executor side: profile one partition's Arrow batches, yield one row holding its envelope."""

    key: StreamKey
    config: ProfileConfig
    plans: Mapping[str, tuple[str, str]]
    outputs: frozenset[str]
    start: float
    end: float
    names: tuple[str, ...] = ()  # the columns' real names, by position

    def empty(self, seed_offset: int = 0) -> WindowProfile:
        cfg = replace(self.config, seed=self.config.seed + seed_offset)
        prof = WindowProfile(self.key, self.start, self.end, cfg)
        prof.declare({n: k for n, (k, _) in self.plans.items()}, self.outputs)
        # all-null columns have no kind yet: an empty batch creates them, as a file's header row does
        unknown = {n: np.empty(0, dtype=object) for n, (k, _) in self.plans.items()
                   if k not in ("numeric", "categorical")}
        if unknown:
            prof.update({n: a for n, a in unknown.items() if n not in self.outputs},
                        {n: a for n, a in unknown.items() if n in self.outputs} or None)
        return prof

    def __call__(self, batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa
        from pyspark import TaskContext

        ctx = TaskContext.get()
        prof = self.empty(ctx.partitionId() if ctx is not None else 0)  # distinct reservoir draws per partition
        for rb in batches:
            if rb.num_rows == 0:
                continue
            cols = {n: _convert(rb.column(i), self.plans[n]) for i, n in enumerate(self.names)}
            feats = {k: v for k, v in cols.items() if k not in self.outputs}
            outs = {k: v for k, v in cols.items() if k in self.outputs}
            prof.update(feats, outs or None)
        data = encode_envelope(Envelope([prof], producer={"name": "driftline-spark"}))
        yield pa.RecordBatch.from_arrays([pa.array([data], pa.binary())], names=["profile"])


def _decode(data: bytes) -> WindowProfile:
    return decode_envelope(data, max_bytes=_MAX_PROFILE_BYTES, instant_ok=True, trusted=True).profiles[0]


def _merge_bytes(a: bytes | None, b: bytes | None) -> bytes | None:
    """Merge two encoded partition profiles (the tree aggregation's step, on an executor)."""
    if a is None or b is None:
        return a if b is None else b
    merged = _decode(a).merge_into(_decode(b))
    return encode_envelope(Envelope([merged], producer={"name": "driftline-spark"}))


def _row_bytes(row: Any) -> bytes:
    return bytes(row[0])


def profile_dataframe(
    df: Any,
    key: StreamKey,
    config: ProfileConfig | None = None,
    *,
    outputs: Iterable[str] = (),
    exclude: Iterable[str] = (),
    start: float | None = None,
    end: float | None = None,
    merge: str = "tree",
    depth: int = 2,
) -> WindowProfile:
    """Profile every row of a Spark DataFrame: one profile per partition, merged into one.

    Columns named in ``outputs`` become model outputs; ``exclude`` drops columns (ids). The window is
    ``[start, end)`` (both default to now: a reference). ``merge="tree"`` combines the partitions'
    profiles with ``treeAggregate(depth=depth)`` on the executors, so the driver receives one;
    ``merge="driver"`` collects them (one encoded profile per partition, typically tens of KB)
    and merges them on the driver, which also works over Spark Connect.
    """
    if merge not in MERGES:
        raise ProfileError(f"merge must be one of {', '.join(MERGES)}, got {merge!r}")
    skip, outs = set(exclude), frozenset(outputs)
    missing = outs - set(df.columns)
    if missing:
        raise DataFileError(f"output column(s) not found: {', '.join(sorted(missing))}")
    _check_names(df.columns)
    F = _pyspark()
    df = df.select(*[F.col(_quoted(f.name)) if _arrow_ready(f.dataType)
                     else F.col(_quoted(f.name)).cast("string").alias(f.name)
                     for f in df.schema.fields if f.name not in skip])
    now = time.time()
    start = now if start is None else float(start)
    names = tuple(df.columns)
    profiler = _PartitionProfiler(key, config or ProfileConfig(), column_plans(df), outs,
                                  start, start if end is None else float(end), names)
    out = profiler.empty()
    # positional names for the trip to Python: mapInArrow resolves `a.b` as a nested field
    safe = df.select(*[F.col(_quoted(n)).alias(f"_{i}") for i, n in enumerate(names)])
    rows = safe.mapInArrow(profiler, "profile binary")
    if merge == "driver":
        # collect, not toLocalIterator: that runs one job per partition, one after another
        for row in rows.collect():
            out.merge_into(_decode(_row_bytes(row)))
        return out
    merged = rows.rdd.map(_row_bytes).treeAggregate(None, _merge_bytes, _merge_bytes, depth=depth)
    return out.merge_into(_decode(merged)) if merged is not None else out


def profile_parquet(
    path: str,
    key: StreamKey,
    config: ProfileConfig | None = None,
    *,
    outputs: Iterable[str] = (),
    exclude: Iterable[str] = (),
    spark: Any = None,
) -> WindowProfile:
    """``driftline reference build --engine spark``: profile Parquet (a file, a directory, a glob, a URI).

    Uses ``spark`` or the active session, else creates one from the environment (``spark-submit``'s
    settings, ``PYSPARK_SUBMIT_ARGS``, else local mode on every core) and stops it afterwards.
    """
    _pyspark()
    from pyspark.sql import SparkSession

    own = None
    if spark is None:
        spark = SparkSession.getActiveSession()
    if spark is None:
        spark = own = SparkSession.builder.appName("driftline reference build").getOrCreate()
        try:
            spark.sparkContext.setLogLevel("ERROR")
        except Exception:  # Spark Connect has no SparkContext
            pass
    try:
        try:
            df = spark.read.parquet(path)
        except Exception as exc:  # AnalysisException and friends: a missing path, not Parquet
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataFileError(f"{path}: Spark cannot read it as Parquet ({first})") from exc
        return profile_dataframe(df, key, config, outputs=outputs, exclude=exclude)
    finally:
        if own is not None:
            own.stop()
