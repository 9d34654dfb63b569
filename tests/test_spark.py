"""``driftline.spark`` on a real local Spark (``local[2]``): the same profile as the single-process build.

One SparkSession for the module (Spark starts in ~10-20 s). The data is one Parquet file of 200k rows
in 10 row groups, read in >= 4 partitions in row order, so the first partitions see only
numeric-looking codes and others only text: kinds decided per partition would not merge.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from driftline.columns import CategoricalColumn, NumericColumn
from driftline.datafiles import DataFile
from driftline.errors import DataFileError, ProfileError
from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.profiling import profile_file
from driftline.stats.numeric import SketchCDF, numeric_scores, sketch_cdf
from driftline.wire import decode_envelope, read_profile_file

if os.environ.get("CI"):
    import pyspark  # noqa: F401  (CI installs the spark extra: a missing pyspark fails, never skips)
else:
    pytest.importorskip("pyspark")

N = 200_000
KEY = StreamKey.of("fraud", "v3", variant="reference", source="training")
SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    # split the one file by row group: >= 4 partitions in row order
    "spark.sql.files.maxPartitionBytes": str(1 << 20),
}


def training_table(n: int = N, seed: int = 7):
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 2.0, n)
    x_null = rng.random(n) < 0.05
    cat = rng.choice([f"c{i}" for i in range(40)], n).astype(object)
    cat[rng.random(n) < 0.03] = None
    # 40% numeric-looking codes first ("2.0" and "2" are one label), then text: categorical overall
    head = int(n * 0.4)
    code = np.concatenate([rng.choice(["1", "2.0", "2", "+3"], head), rng.choice(["a", "b", "zz"], n - head)])
    mixed = rng.integers(0, 50, n).astype(str).astype(object)
    mixed[rng.random(n) < 0.01] = "oops"
    mixed[rng.random(n) < 0.02] = None
    ts = 1_700_000_000_000_000 + rng.integers(0, 86_400_000_000 * 30, n)
    return pa.table({
        "x": pa.array(x, mask=x_null),
        "k": pa.array(rng.integers(-500, 1000, n)),
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "cat": pa.array(cat, pa.string()),
        "code": pa.array(code, pa.string()),
        "mixed": pa.array(mixed, pa.string()),
        "flag": pa.array(rng.random(n) < 0.3),
        "empty": pa.array([None] * n, pa.string()),
        "id": pa.array(np.char.add("row", np.arange(n).astype(str)), pa.string()),
        "score": pa.array(rng.beta(2, 5, n)),
    })


@pytest.fixture(scope="module")
def parquet(tmp_path_factory) -> Path:
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("spark") / "train.parquet"
    pq.write_table(training_table(), path, row_group_size=N // 10)
    return path


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master("local[2]").appName("driftline-tests")
    for k, v in SPARK_CONF.items():
        builder = builder.config(k, v)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def single(parquet: Path) -> WindowProfile:
    """The single-process build of the same file (what ``reference build`` without --engine writes)."""
    return profile_file(DataFile(parquet), KEY, ProfileConfig(), outputs=["score"], exclude=["id"])


def assert_exact_counters_equal(a: WindowProfile, b: WindowProfile) -> None:
    assert (a.rows, a.rows_profiled) == (b.rows, b.rows_profiled)
    assert set(a.features) == set(b.features) and set(a.outputs) == set(b.outputs)
    for name, ca in a.columns.items():
        cb = b.columns[name]
        assert type(ca) is type(cb), name
        if isinstance(ca, NumericColumn):
            assert isinstance(cb, NumericColumn)
            for f in ("count", "missing", "nan", "inf", "invalid", "absent", "min", "max"):
                assert getattr(ca, f) == getattr(cb, f), (name, f)
            # partition sums add in another order: equal to float rounding (bit-equal for integers)
            assert ca.sum == pytest.approx(cb.sum, rel=1e-12, abs=1e-9), name
            assert ca.sumsq == pytest.approx(cb.sumsq, rel=1e-12), name
        else:
            assert isinstance(ca, CategoricalColumn) and isinstance(cb, CategoricalColumn)
            for f in ("count", "missing", "invalid", "absent"):
                assert getattr(ca, f) == getattr(cb, f), (name, f)
            assert ca.max_error == cb.max_error == 0, name  # below capacity: exact counts
            assert ca.frequencies() == cb.frequencies(), name
            assert ca.ds is not None and cb.ds is not None and ca.ds.to_dict() == cb.ds.to_dict(), name
            assert ca.distinct == pytest.approx(cb.distinct, rel=3 * ca.hll.get_rel_err(True, True, ca.lg_k, 3)), name


def assert_sketches_within_bounds(a: WindowProfile, b: WindowProfile, table) -> None:
    for name, ca in a.columns.items():
        if not isinstance(ca, NumericColumn) or ca.count == 0:
            continue
        cb = b.columns[name]
        assert isinstance(cb, NumericColumn)
        s = numeric_scores(ca, cb)
        assert s.rank_error > 0, name  # 200k values: both sketches are estimating
        assert s.ks <= s.rank_error, (name, s.ks, s.rank_error)
        if name in table.column_names and name != "mixed":
            exact = SketchCDF.from_values(_values(table, name))
            got = sketch_cdf(ca)
            ranks = np.linspace(0.01, 0.99, 99)
            err = np.abs(exact.cdf(got.quantiles(ranks)) - ranks)
            assert err.max() <= ca.rank_error + 1.0 / ca.count, (name, err.max(), ca.rank_error)


def _values(table, name: str) -> np.ndarray:
    import pyarrow as pa

    col = table.column(name).drop_null()
    if pa.types.is_timestamp(col.type):
        return col.cast(pa.int64()).to_numpy().astype(np.float64) / 1e6
    return col.to_numpy().astype(np.float64)


def test_partitions_are_many_and_in_row_order(spark, parquet: Path) -> None:
    df = spark.read.parquet(str(parquet))
    assert df.rdd.getNumPartitions() >= 4


def test_tree_merge_equals_the_single_process_build(spark, parquet: Path, single: WindowProfile) -> None:
    import pyarrow.parquet as pq

    from driftline.spark import profile_dataframe

    df = spark.read.parquet(str(parquet))
    prof = profile_dataframe(df, KEY, ProfileConfig(), outputs=["score"], exclude=["id"], merge="tree")
    assert_exact_counters_equal(prof, single)
    assert_sketches_within_bounds(prof, single, pq.read_table(parquet))
    assert prof.rows == N and "id" not in prof.features and set(prof.outputs) == {"score"}
    # kinds decided once for the whole DataFrame, although the first partitions hold numeric-looking codes only
    assert isinstance(prof.features["code"], CategoricalColumn)
    assert set(prof.features["code"].frequencies()) == {"1", "2", "3", "a", "b", "zz"}
    mixed = prof.features["mixed"]
    assert isinstance(mixed, NumericColumn) and mixed.invalid > 0 and mixed.missing > 0
    assert isinstance(prof.features["flag"], CategoricalColumn)
    assert set(prof.features["flag"].frequencies()) == {"true", "false"}
    assert prof.features["empty"].missing == N
    assert prof.key == KEY and prof.start == prof.end


def test_driver_merge_of_shuffled_partitions(spark, parquet: Path, single: WindowProfile) -> None:
    from driftline.spark import profile_dataframe

    df = spark.read.parquet(str(parquet)).repartition(5)  # rows shuffled across partitions this time
    prof = profile_dataframe(df, KEY, ProfileConfig(), outputs=["score"], exclude=["id"], merge="driver")
    assert_exact_counters_equal(prof, single)


def test_window_profile_with_its_window_and_a_reservoir(spark) -> None:
    from driftline.spark import profile_dataframe

    key = StreamKey.of("fraud", "v3", variant="canary", source="batch-scoring")
    pdf = {"a": [float(i) for i in range(5000)], "b": [f"l{i % 7}" for i in range(5000)]}
    df = spark.createDataFrame(list(zip(pdf["a"], pdf["b"], strict=True)), "a double, b string").repartition(4)
    prof = profile_dataframe(df, key, ProfileConfig(reservoir_size=100), start=1000.0, end=1060.0)
    assert (prof.start, prof.end, prof.key) == (1000.0, 1060.0, key)
    assert prof.features["a"].count == 5000 and prof.features["a"].sum == sum(pdf["a"])
    assert prof.reservoir is not None and len(prof.reservoir.rows) == 100 and prof.reservoir.seen == 5000
    assert {r["b"] for r in prof.reservoir.rows} <= {f"l{i}" for i in range(7)}


def test_awkward_names_and_types(spark) -> None:
    from driftline.spark import profile_dataframe

    df = spark.sql("SELECT id * 0.5 AS `a.b`, make_interval(0, 0, 0, CAST(id % 3 AS INT)) AS `iv`, "
                   "CAST(id AS DECIMAL(20, 2)) AS `dec`, named_struct('x', id) AS `st` FROM range(1000)")
    prof = profile_dataframe(df, KEY)
    assert prof.features["a.b"].count == 1000 and prof.features["a.b"].max == 499.5
    iv = prof.features["iv"]  # calendar intervals: no Arrow form, profiled as text labels
    assert isinstance(iv, CategoricalColumn) and len(iv.frequencies()) == 3 and iv.count == 1000
    assert isinstance(prof.features["dec"], NumericColumn) and prof.features["dec"].sum == sum(range(1000))
    assert prof.features["st"].invalid == 1000  # a struct is no label: counted as wrong-typed


def test_empty_dataframe_keeps_its_columns(spark) -> None:
    from driftline.spark import profile_dataframe

    df = spark.createDataFrame([], "a double, b string")
    prof = profile_dataframe(df, KEY)
    assert prof.rows == 0 and set(prof.features) == {"a", "b"}


def test_bad_input_is_a_typed_error(spark, tmp_path: Path) -> None:
    from driftline.spark import profile_dataframe, profile_parquet

    df = spark.createDataFrame([(1.0, "x")], "a double, b string")
    with pytest.raises(DataFileError, match="output column"):
        profile_dataframe(df, KEY, outputs=["nope"])
    with pytest.raises(ProfileError, match="merge"):
        profile_dataframe(df, KEY, merge="sideways")
    not_parquet = tmp_path / "t.parquet"
    not_parquet.write_text("a,b\n1,2\n")
    with pytest.raises(DataFileError, match="Parquet"):
        profile_parquet(str(not_parquet), KEY, spark=spark)
    with pytest.raises(DataFileError, match="Parquet"):
        profile_parquet(str(tmp_path / "missing.parquet"), KEY, spark=spark)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftline.apps.cli.main", *args], capture_output=True, text=True,
                          timeout=540, env={**os.environ, **(env or {})})


@pytest.mark.timeout(600)  # a second JVM: ~30 s alone, minutes on a loaded 2-core machine
def test_cli_engine_spark_builds_a_reference_the_service_accepts(parquet: Path, single: WindowProfile,
                                                                 tmp_path: Path) -> None:
    from driftline.service.settings import ServiceSettings
    from tests.service_support import running_service

    conf = " ".join(f"--conf {k}={v}" for k, v in SPARK_CONF.items())
    env = {"PYSPARK_SUBMIT_ARGS": f"--master local[2] {conf} pyspark-shell"}
    out = tmp_path / "ref.dlp"
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 's.sqlite'}", port=0)
    with running_service(settings) as url:
        proc = cli("reference", "build", str(parquet), "--engine", "spark", "--model", "fraud", "--version", "v3",
                   "--out", str(out), "--output", "score", "--exclude", "id", "--upload", url, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"{N} rows" in proc.stdout and "uploaded" in proc.stdout, proc.stdout
        import httpx

        refs = httpx.get(f"{url}/v1/models/fraud/references", timeout=10).json()["references"]
    assert [(r["version"], r["rows"]) for r in refs] == [("v3", N)]
    # the bytes pass the service's untrusted decode, and hold the single-process build's counters
    env_ = decode_envelope(out.read_bytes(), max_bytes=settings.max_body_bytes * 16, instant_ok=True)
    prof = env_.profiles[0]
    assert read_profile_file(out).rows == N
    single_cli = profile_file(DataFile(parquet), KEY, ProfileConfig(reservoir_size=1000), outputs=["score"],
                              exclude=["id"])
    assert_exact_counters_equal(prof, single_cli)
    assert prof.reservoir is not None and len(prof.reservoir.rows) == 1000 and prof.reservoir.seen == N
    assert (prof.key.variant, prof.key.source) == ("reference", "training")


def test_cli_without_pyspark_names_the_extra(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['pyspark'] = None; from driftline.apps.cli.main import main; "
            f"sys.exit(main(['reference', 'build', {str(tmp_path / 'x.parquet')!r}, '--engine', 'spark', "
            "'--model', 'm', '--version', 'v', '--out', 'o.dlp']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "driftline: error: pyspark is not installed; install it with: " \
                                  "pip install 'driftline[spark]'"
