"""The core CLI (reference build, profile inspect) and the data-file readers, end to end on files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from driftline.apps.cli.main import main
from driftline.columns import CategoricalColumn, NumericColumn
from driftline.datafiles import DataFile
from driftline.errors import DataFileError
from driftline.wire import read_profile_file


@pytest.fixture()
def train_rows() -> list[dict]:
    rng = np.random.default_rng(5)
    return [
        {
            "age": float(rng.normal(40, 10)) if i % 25 else None,
            "city": str(rng.choice(["oslo", "lima", "pune"])),
            "score": float(rng.random()),
            "label": int(rng.integers(0, 3)),
        }
        for i in range(3000)
    ]


def write_csv(path, rows) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if v is None else v for k, v in r.items()})


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_parquet(path, rows) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_reference_build_from_each_format(tmp_path, train_rows, fmt, capsys) -> None:
    data = tmp_path / f"train.{fmt}"
    {"csv": write_csv, "jsonl": write_jsonl, "parquet": write_parquet}[fmt](data, train_rows)
    out = tmp_path / "ref.dlp"
    rc = main(["reference", "build", str(data), "--model", "churn", "--version", "v3", "--out", str(out),
               "--output", "score,label", "--categorical", "label"])
    assert rc == 0
    assert "3000 rows" in capsys.readouterr().out
    prof = read_profile_file(out)
    assert (prof.key.model, prof.key.model_version, prof.rows) == ("churn", "v3", 3000)
    age = prof.features["age"]
    assert isinstance(age, NumericColumn)
    assert age.count == 2880 and age.missing + age.nan == 120
    assert isinstance(prof.features["city"], CategoricalColumn)
    assert sum(prof.features["city"].frequencies().values()) == 3000
    assert set(prof.outputs) == {"score", "label"}
    assert isinstance(prof.outputs["label"], CategoricalColumn)
    ages = np.array([r["age"] for r in train_rows if r["age"] is not None])
    assert age.mean == pytest.approx(ages.mean())


def test_profile_inspect_text_and_json(tmp_path, train_rows, capsys) -> None:
    data = tmp_path / "t.csv"
    write_csv(data, train_rows)
    out = tmp_path / "ref.dlp"
    assert main(["reference", "build", str(data), "--model", "m", "--version", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["profile", "inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "rows 3000" in text and "age" in text and "p50" in text
    assert main(["profile", "inspect", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["rows"] == 3000
    assert {f["name"]: f["type"] for f in d["features"]}["city"] == "categorical"


@pytest.mark.parametrize(
    "content, name, message",
    [
        ("", "empty.csv", "empty CSV"),
        ("a,b\n1,2\n3\n", "ragged.csv", "line 3 has 1 fields"),
        ("{\"a\": 1}\nnot json\n", "bad.jsonl", "line 2 is not JSON"),
        ("[1, 2]\n", "list.jsonl", "not a JSON object"),
        ("PAR1 not really", "bad.parquet", "not a readable Parquet"),
    ],
)
def test_bad_files_give_one_line_error_and_exit_2(tmp_path, content, name, message) -> None:
    path = tmp_path / name
    path.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "driftline.apps.cli.main", "reference", "build", str(path),
         "--model", "m", "--version", "1", "--out", str(tmp_path / "o.dlp")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_output_column_is_an_error(tmp_path, train_rows) -> None:
    data = tmp_path / "t.csv"
    write_csv(data, train_rows)
    with pytest.raises(DataFileError, match="output column"):
        from driftline.profile import StreamKey
        from driftline.profiling import profile_file

        profile_file(DataFile(data), StreamKey.of("m", "1"), outputs=["nope"])


def test_csv_mixed_column_keeps_numbers_and_counts_text(tmp_path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("x,y\n" + "\n".join(["1.5,a"] * 10 + ["oops,a", ",a"]) + "\n")
    cols = DataFile(path).read_all()
    from driftline.profile import StreamKey, WindowProfile

    p = WindowProfile(StreamKey.of("m", "1"), 0, 1).update(cols)
    x = p.features["x"]
    assert isinstance(x, NumericColumn)
    assert (x.count, x.invalid, x.missing) == (10, 1, 1)


def test_help_lists_commands() -> None:
    proc = subprocess.run([sys.executable, "-m", "driftline.apps.cli.main", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    assert "reference" in proc.stdout and "profile" in proc.stdout
