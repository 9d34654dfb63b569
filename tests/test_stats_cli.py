"""``driftline drift REFERENCE CURRENT``: data files (CSV, Parquet, JSON Lines) or profile files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from driftline.apps.cli.main import main
from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.wire import write_profile_file

N_REF, N_CUR = 3000, 1000


def frames(seed: int = 8) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    ref = {"a": rng.normal(0, 1, N_REF), "b": rng.normal(0, 1, N_REF), "city": rng.choice(list("ab"), N_REF),
           "score": rng.random(N_REF)}
    cur = {"a": rng.normal(1, 1, N_CUR), "b": rng.normal(0, 1, N_CUR), "city": rng.choice(list("ab"), N_CUR),
           "score": rng.random(N_CUR) ** 3}
    return ref, cur


def write(path: Path, cols: dict[str, np.ndarray]) -> Path:
    names = list(cols)
    rows = list(zip(*(cols[n].tolist() for n in names), strict=True))
    if path.suffix == ".csv":
        path.write_text(",".join(names) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    elif path.suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(dict(zip(names, r, strict=True))) for r in rows) + "\n")
    elif path.suffix == ".parquet":
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        pq.write_table(pa.table(cols), path)
    else:
        cfg = ProfileConfig(categorical=frozenset({"city"}))
        feats = {k: v for k, v in cols.items() if k != "score"}
        write_profile_file(path, WindowProfile(StreamKey.of("m", "v"), 0, 1, cfg).update(feats, {"score": cols["score"]}))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["drift", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def items(report: dict) -> dict[str, dict]:
    return {f["name"]: f for f in report["features"] + report["outputs"]}


@pytest.mark.parametrize(("ref_suffix", "cur_suffix"), [(".csv", ".csv"), (".parquet", ".jsonl"), (".dlp", ".csv"),
                                                        (".dlp", ".dlp")])
def test_json_report_from_data_or_profile_files(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                ref_suffix: str, cur_suffix: str) -> None:
    ref, cur = frames()
    rp, cp = write(tmp_path / f"ref{ref_suffix}", ref), write(tmp_path / f"cur{cur_suffix}", cur)
    code, out, _ = run(capsys, str(rp), str(cp), "--output", "score", "--categorical", "city", "--json")
    assert code == 0
    rep = json.loads(out)
    assert set(rep) >= {"dataset_drift", "drift_share", "status", "features", "outputs", "data_quality"}
    got = items(rep)
    assert got["a"]["drift_detected"] and not got["b"]["drift_detected"] and not got["city"]["drift_detected"]
    assert got["score"]["drift_detected"] and [o["name"] for o in rep["outputs"]] == ["score"]
    assert got["city"]["type"] == "categorical" and got["a"]["type"] == "numeric"
    assert {"ks", "ks_p_value", "psi", "jensen_shannon", "wasserstein", "hellinger"} <= set(got["a"]["scores"])
    assert {"chi2_p_value", "tvd", "jensen_shannon", "psi"} <= set(got["city"]["scores"])
    assert rep["drift_share"] == pytest.approx(1 / 3) and rep["dataset_drift"] is False
    assert rep["reference_rows"] == N_REF and rep["current_rows"] == N_CUR


def test_table_and_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref, cur = frames()
    rp, cp = write(tmp_path / "ref.csv", ref), write(tmp_path / "cur.csv", cur)
    code, out, _ = run(capsys, str(rp), str(cp), "--output", "score")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("dataset drift: no")
    header = lines[2]
    assert header.split()[:8] == ["column", "role", "type", "status", "method", "effect", "thresh", "p(adj)"]
    rows = {ln.split()[0]: ln for ln in lines[4:] if ln.strip()}
    assert "DRIFT" in rows["a"] and "ok" in rows["b"] and rows["score"].split()[1] == "output"
    assert len({len(ln) for ln in lines[2:4]}) == 1  # header and rule line up
    # per-method and per-column thresholds, another method, no correction
    code, out, _ = run(capsys, str(rp), str(cp), "--json", "--method", "wasserstein", "--threshold", "5",
                       "--feature-threshold", "b=0", "--threshold", "psi=0.3", "--correction", "none", "--alpha", "0.5")
    rep = items(json.loads(out))
    assert rep["a"]["method"] == "wasserstein" and rep["a"]["threshold"] == 5 and not rep["a"]["drift_detected"]
    assert rep["b"]["threshold"] == 0
    assert json.loads(out)["config"]["thresholds"]["psi"] == 0.3


@pytest.mark.parametrize("problem", ["missing_file", "bad_profile", "bad_threshold", "unknown_method", "bad_alpha",
                                     "missing_output", "not_data"])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str) -> None:
    ref, cur = frames()
    rp, cp = write(tmp_path / "ref.csv", ref), write(tmp_path / "cur.csv", cur)
    args = [str(rp), str(cp)]
    if problem == "missing_file":
        args = [str(rp), str(tmp_path / "nope.csv")]
    elif problem == "bad_profile":
        (tmp_path / "bad.dlp").write_bytes(b"DLNE" + b"\x00garbage" * 10)
        args = [str(tmp_path / "bad.dlp"), str(cp)]
    elif problem == "bad_threshold":
        args += ["--threshold", "ks=lots"]
    elif problem == "unknown_method":
        args += ["--threshold", "kss=0.1"]
    elif problem == "bad_alpha":
        args += ["--alpha", "2"]
    elif problem == "missing_output":
        args += ["--output", "prediction"]
    elif problem == "not_data":
        (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
        args = [str(rp), str(tmp_path / "x.parquet")]
    code, out, err = run(capsys, *args)
    assert code == 2, (out, err)
    assert out == "" or "profiling" not in out
    assert len(err.strip().splitlines()) == 1 and err.startswith("driftline: error: "), err
    assert "Traceback" not in err
