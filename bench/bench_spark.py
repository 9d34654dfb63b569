"""``driftline.spark`` in local mode against the single-process build, on one Parquet file.

Writes ``--rows`` rows (4 numeric, 2 categorical, a numbers-with-text column, missing values) as
Parquet, then times: the single-process ``profile_file`` (what ``reference build`` runs), Spark's
start, and ``profile_dataframe`` in ``local[N]`` three times (the first ones pay for Python workers' start),
and an identity ``mapInArrow`` over the same file (Spark's own cost of handing the rows to Python).
Not a test. Run: ``python bench/bench_spark.py [--rows 1000000] [--cores 2]`` (needs the spark extra).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def write_data(path: Path, n: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    cols = {f"x{i}": pa.array(rng.normal(i, 1 + i, n), mask=rng.random(n) < 0.02) for i in range(4)}
    cols["city"] = pa.array(rng.choice([f"city{i}" for i in range(200)], n))
    cols["tier"] = pa.array(rng.choice(["a", "b", "c", None], n, p=[0.5, 0.3, 0.15, 0.05]))
    mixed = rng.integers(0, 100, n).astype(str).astype(object)
    mixed[rng.random(n) < 0.01] = "oops"
    cols["mixed"] = pa.array(mixed, pa.string())
    cols["score"] = pa.array(rng.beta(2, 5, n))
    pq.write_table(pa.table(cols), path, row_group_size=max(n // 16, 1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()
    from driftline.datafiles import DataFile
    from driftline.profile import StreamKey
    from driftline.profiling import profile_file

    key = StreamKey.of("bench", "v1", "reference", "training")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.parquet"
        write_data(path, args.rows)
        t = time.perf_counter()
        single = profile_file(DataFile(path), key, outputs=["score"])
        t_single = time.perf_counter() - t
        print(f"single process: {t_single:6.2f} s  {args.rows / t_single:12,.0f} rows/s")

        from pyspark.sql import SparkSession

        from driftline.spark import profile_dataframe

        t = time.perf_counter()
        spark = (SparkSession.builder.master(f"local[{args.cores}]").config("spark.ui.enabled", "false")
                 .config("spark.ui.showConsoleProgress", "false").getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        print(f"spark start:    {time.perf_counter() - t:6.2f} s")
        df = spark.read.parquet(str(path))
        print(f"partitions:     {df.rdd.getNumPartitions()}")
        for run in ("1st", "2nd", "3rd"):
            t = time.perf_counter()
            prof = profile_dataframe(df, key, outputs=["score"])
            dt = time.perf_counter() - t
            assert prof.rows == single.rows
            print(f"spark {run}:     {dt:6.2f} s  {args.rows / dt:12,.0f} rows/s  ({dt / t_single:.1f}x single)")
        t = time.perf_counter()
        df.mapInArrow(lambda it: it, df.schema).write.format("noop").mode("overwrite").save()
        print(f"identity mapInArrow: {time.perf_counter() - t:6.2f} s")
        spark.stop()


if __name__ == "__main__":
    main()
