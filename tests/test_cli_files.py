"""Verdicts from real files through ``driftline`` as a whole process: types, labels, missing data, roles, exit codes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from driftline.columns import CategoricalColumn, NumericColumn
from driftline.datafiles import DataFile
from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.wire import read_profile_file


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftline.apps.cli.main", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def drift_json(*args: str) -> dict:
    proc = cli("drift", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(["" if v is None else v for v in r] for r in rows)
    return path


def feature(report: dict, name: str) -> dict:
    return next(f for f in report["features"] + report["outputs"] if f["name"] == name)


def signals(report: dict, column: str | None = None) -> list[str]:
    return [i["signal"] for i in report["data_quality"]["issues"] if column is None or i["column"] == column]


# ---- labels: one label per category value ----------------------------------------------------------

def test_codes_written_1_and_1_0_in_different_files_are_one_category(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    codes = rng.integers(1, 4, size=(2, 3000))
    ref = write_csv(tmp_path / "ref.csv", ["code", "x"], [[str(c), float(i)] for i, c in enumerate(codes[0])])
    cur = write_csv(tmp_path / "cur.csv", ["code", "x"], [[f"{c}.0", float(i)] for i, c in enumerate(codes[1])])
    rep = drift_json(str(ref), str(cur), "--categorical", "code")
    code = feature(rep, "code")
    assert code["type"] == "categorical"
    assert code["drift_detected"] is False
    assert code["scores"]["tvd"] < 0.05
    assert "new_categories" not in signals(rep, "code")


def test_labels_stay_one_across_batches_of_the_stdlib_reader(tmp_path: Path) -> None:
    """Batch 1 reads as floats (1.0 -> "1"), batch 2 has text so its numbers stay text ("1.0")."""
    rows = [["1.0"]] * 100 + [["2"]] * 100 + [["1.0"], ["x"], ["2.00"]] * 100
    path = write_csv(tmp_path / "c.csv", ["code"], rows)
    prof = WindowProfile(StreamKey.of("m", "v"), 0, 1, ProfileConfig(categorical=frozenset({"code"})))
    for cols, _ in DataFile(path, engine="stdlib").batches(batch_rows=200):
        prof.update(cols)
    cat = prof.features["code"]
    assert isinstance(cat, CategoricalColumn)
    assert cat.frequencies() == {"1": 200, "2": 200, "x": 100}


# ---- types from the whole file --------------------------------------------------------------------

def test_leading_nulls_do_not_make_a_text_column_numeric(tmp_path: Path) -> None:
    rows = [[None, float(i)] for i in range(70_000)] + [[c, 1.0] for c in ["a", "b", "c"] * 2000]
    data = write_csv(tmp_path / "late.csv", ["city", "x"], rows)
    out = tmp_path / "ref.dlp"
    proc = cli("reference", "build", str(data), "--model", "m", "--version", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    prof = read_profile_file(out)
    city = prof.features["city"]
    assert isinstance(city, CategoricalColumn)
    assert (city.count, city.missing, city.invalid) == (6000, 70_000, 0)
    # the stdlib reader (no pyarrow) reaches the same kind: the nulls wait for the first values
    proc = cli("reference", "build", str(data), "--model", "m", "--version", "1", "--out", str(out),
               env={"DRIFTLINE_NO_PYARROW": "1"})
    assert proc.returncode == 0, proc.stderr
    city = read_profile_file(out).features["city"]
    assert isinstance(city, CategoricalColumn) and (city.count, city.missing) == (6000, 70_000)


def test_arrow_and_stdlib_readers_agree_on_a_mixed_file(tmp_path: Path) -> None:
    rows = [[1.5 * i if i % 7 else None, "abc"[i % 3], i if i % 50 else "oops"] for i in range(3000)]
    path = write_csv(tmp_path / "mix.csv", ["x", "city", "n"], rows)
    summaries = []
    for engine in ("arrow", "stdlib"):
        prof = WindowProfile(StreamKey.of("m", "v"), 0, 1)
        data = DataFile(path, engine=engine)
        prof.declare(data.kinds())
        for cols, _ in data.batches(batch_rows=1000):
            prof.update(cols)
        summaries.append({k: (c.kind, c.count, c.missing + getattr(c, "nan", 0), c.invalid)
                          for k, c in prof.features.items()})
    assert summaries[0] == summaries[1]
    assert summaries[0]["n"] == ("numeric", 2940, 0, 60)


def test_jsonl_with_a_column_that_changes_type_falls_back_and_reads(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps({"a": i, "b": "x"}) + "\n" for i in range(50)) + '{"a": "text", "b": "y"}\n')
    data = DataFile(path)
    prof = WindowProfile(StreamKey.of("m", "v"), 0, 1)
    for cols, _ in data.batches():
        prof.update(cols)
    a = prof.features["a"]
    assert isinstance(a, NumericColumn) and (a.count, a.invalid) == (50, 1)


# ---- missing data -----------------------------------------------------------------------------------

def test_column_going_all_missing_is_a_missing_rate_jump_not_a_type_change(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    ref = write_csv(tmp_path / "ref.csv", ["city", "x"],
                    [[str(rng.choice(["oslo", "lima"])), float(rng.normal())] for _ in range(2000)])
    cur = write_csv(tmp_path / "cur.csv", ["city", "x"], [[None, float(rng.normal())] for _ in range(2000)])
    rep = drift_json(str(ref), str(cur))
    assert "type_change" not in signals(rep)
    assert "missing_rate_jump" in signals(rep, "city")
    assert feature(rep, "city")["status"] == "insufficient_data"
    assert feature(rep, "city")["missing_ratio"]["current"] == 1.0
    assert feature(rep, "x")["status"] == "ok"


def test_header_only_current_file_is_insufficient_data(tmp_path: Path) -> None:
    ref = write_csv(tmp_path / "ref.csv", ["city", "x"], [["oslo", 1.0], ["lima", 2.0]] * 100)
    cur = write_csv(tmp_path / "cur.csv", ["city", "x"], [])
    for extra_env in ({}, {"DRIFTLINE_NO_PYARROW": "1"}):
        proc = cli("drift", str(ref), str(cur), "--json", env=extra_env)
        assert proc.returncode == 0, proc.stderr
        rep = json.loads(proc.stdout)
        assert rep["status"] == "insufficient_data"
        assert {f["status"] for f in rep["features"]} == {"insufficient_data"}
        assert "missing_column" not in signals(rep) and "type_change" not in signals(rep)


# ---- out_of_range scales with the sample ------------------------------------------------------------

def test_out_of_range_quiet_on_a_small_random_split_and_loud_on_a_real_shift(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(570, 30))
    names = [f"c{i}" for i in range(30)]
    ref = write_csv(tmp_path / "ref.csv", names, x[:285].tolist())
    cur = write_csv(tmp_path / "cur.csv", names, x[285:].tolist())
    rep = drift_json(str(ref), str(cur))
    assert signals(rep).count("out_of_range") <= 1  # the fixed 1% rule fired on about a third of them
    y = x[285:].copy()
    y[:, :3] += 4.0  # most of the mass now lies above the reference maximum
    cur2 = write_csv(tmp_path / "cur2.csv", names, y.tolist())
    rep2 = drift_json(str(ref), str(cur2))
    flagged = {i["column"] for i in rep2["data_quality"]["issues"] if i["signal"] == "out_of_range"}
    assert {"c0", "c1", "c2"} <= flagged and len(flagged) <= 4


# ---- roles, reservoir, exit codes ---------------------------------------------------------------------

@pytest.fixture()
def train_and_today(tmp_path: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(4)

    def rows(shift: float) -> list[list[object]]:
        return [[float(rng.normal(shift)), int(rng.integers(0, 3)), float(rng.random()), int(rng.integers(0, 2))]
                for _ in range(3000)]

    header = ["amount", "segment", "score", "label"]
    return (write_csv(tmp_path / "train.csv", header, rows(0.0)), write_csv(tmp_path / "same.csv", header, rows(0.0)),
            write_csv(tmp_path / "moved.csv", header, rows(1.0)))


def test_reference_profile_carries_outputs_and_kinds(tmp_path: Path, train_and_today) -> None:
    train, same, _ = train_and_today
    ref = tmp_path / "ref.dlp"
    proc = cli("reference", "build", str(train), "--model", "m", "--version", "1", "--out", str(ref),
               "--output", "score,label", "--categorical", "segment,label")
    assert proc.returncode == 0, proc.stderr
    assert "1000 sample rows" in proc.stdout
    rep = drift_json(str(ref), str(same))  # no --output, no --categorical
    assert [o["name"] for o in rep["outputs"]] == ["score", "label"]
    assert [f["name"] for f in rep["features"]] == ["amount", "segment"]
    kinds = {f["name"]: f["type"] for f in rep["features"] + rep["outputs"]}
    assert kinds == {"amount": "numeric", "segment": "categorical", "score": "numeric", "label": "categorical"}
    assert signals(rep) == []


def test_cli_built_reference_keeps_a_bounded_reservoir_for_drill_down(tmp_path: Path, train_and_today) -> None:
    train, _, moved = train_and_today
    ref, off = tmp_path / "ref.dlp", tmp_path / "off.dlp"
    assert cli("reference", "build", str(train), "--model", "m", "--version", "1", "--out", str(ref)).returncode == 0
    assert cli("reference", "build", str(train), "--model", "m", "--version", "1", "--out", str(off),
               "--no-reservoir").returncode == 0
    prof = read_profile_file(ref)
    assert prof.reservoir is not None and prof.reservoir.seen == 3000 and len(prof.reservoir.rows) == 1000
    assert read_profile_file(off).reservoir is None
    train_amounts = {round(float(r["amount"]), 9) for r in csv.DictReader(train.open())}
    assert all(round(r["amount"], 9) in train_amounts for r in prof.reservoir.rows)  # raw rows, not made up
    pytest.importorskip("evidently")
    from driftline.profiling import profile_file
    from driftline.service.reports import render_evidently_report

    cur = profile_file(DataFile(moved), StreamKey.of("m", "1"), ProfileConfig(reservoir_size=500))
    html = render_evidently_report(prof, cur)
    assert "<html" in html.lower() and "amount" in html


def test_fail_on_drift_exit_codes(tmp_path: Path, train_and_today) -> None:
    train, same, moved = train_and_today
    assert cli("drift", str(train), str(same), "--fail-on-drift").returncode == 0
    proc = cli("drift", str(train), str(moved), "--fail-on-drift")
    assert proc.returncode == 1 and "amount" in proc.stdout
    assert cli("drift", str(train), str(moved)).returncode == 0  # without the flag drift is not a failure
    # one of four features drifted: no dataset drift at the default 50% share
    assert cli("drift", str(train), str(moved), "--fail-on-drift", "dataset").returncode == 0
    bad = cli("drift", str(train), str(tmp_path / "nope.csv"), "--fail-on-drift")
    assert bad.returncode == 2 and "no such file" in bad.stderr and "Traceback" not in bad.stderr
    assert "--fail-on-drift" in cli("drift", "--help").stdout
    assert "--no-reservoir" in cli("reference", "build", "--help").stdout


def test_streamed_csv_types_come_from_a_sample_spread_across_the_file(tmp_path: Path, monkeypatch) -> None:
    """Big CSVs are streamed: late text still makes a categorical, a late stray string is counted."""
    import driftline.arrowfiles as af

    monkeypatch.setattr(af, "STREAM_CSV_BYTES", 0)
    rows = [[None, float(i), i if i % 5000 else "oops"] for i in range(70_000)] + [[c, 1.0, 3] for c in "abc" * 2000]
    path = write_csv(tmp_path / "big.csv", ["city", "x", "n"], rows)
    data = DataFile(path)
    assert data.unit == "B" and data.kinds() == {"city": "categorical", "x": "numeric", "n": "numeric"}
    prof = WindowProfile(StreamKey.of("m", "v"), 0, 1).declare(data.kinds())
    last = 0
    for cols, done in data.batches():
        prof.update(cols)
        last = done
    assert last == path.stat().st_size or abs(last - path.stat().st_size) < path.stat().st_size * 0.2
    got = {k: (c.kind, c.count, c.missing + getattr(c, "nan", 0), c.invalid) for k, c in prof.features.items()}
    assert got == {"city": ("categorical", 6000, 70_000, 0), "x": ("numeric", 76_000, 0, 0),
                   "n": ("numeric", 75_986, 0, 14)}


def _profile_counts(path: Path) -> dict:
    data = DataFile(path)
    prof = WindowProfile(StreamKey.of("m", "v"), 0, 1).declare(data.kinds())
    last = 0
    for cols, done in data.batches():
        prof.update(cols)
        assert done >= last
        last = done
    out = {}
    for k, c in prof.features.items():
        row = [c.kind, c.count, c.missing + getattr(c, "nan", 0), c.invalid]
        if c.kind == "numeric":
            row += [c.rows, round(c.mean, 6), c.min, c.max]
        out[k] = tuple(row)
    return out


@pytest.mark.parametrize("piece", [1 << 12, 1 << 16])
def test_streamed_csv_in_pieces_counts_what_a_whole_file_read_counts(tmp_path: Path, monkeypatch, piece: int) -> None:
    """Pieces split at line ends; a stray string late in the file widens the column mid-stream; a
    quoted cell with a newline after the first pieces hands the rest to the streaming reader."""
    import driftline.arrowfiles as af

    rows: list[list[object]] = [[f"c{i % 7}", i * 0.5, i if i != 9_000 else "oops"] for i in range(12_000)]
    rows.append(['multi\nline, "quoted"', 1.0, 2])
    rows += [[f"c{i % 3}", -1.0 * i, i] for i in range(3_000)]
    path = write_csv(tmp_path / "pieces.csv", ["city", "x", "n"], rows)
    whole = _profile_counts(path)
    monkeypatch.setattr(af, "STREAM_CSV_BYTES", 0)
    monkeypatch.setattr(af, "PIECE_BYTES", piece)
    assert DataFile(path).unit == "B"
    streamed = _profile_counts(path)
    assert streamed == whole
    assert whole["n"][1:4] == (15_000, 0, 1) and whole["city"][1] == 15_001
