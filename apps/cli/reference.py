"""``driftline reference build``: turn training data into a reference profile file."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from driftline.datafiles import DataFile
from driftline.errors import ConfigError
from driftline.profile import StreamKey
from driftline.profiling import calibrate_file, profile_file
from driftline.wire import write_profile_file

from . import reference_remote
from ._args import add_profile_config_args, profile_config_from_args
from .progress import ProgressBar

__all__ = ["DEFAULT_RESERVOIR", "register"]

DEFAULT_RESERVOIR = 1000
"""Raw rows a CLI-built reference keeps by default: enough for a drill-down report, ~100 KB compressed."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reference", help="build reference profiles from training data")
    rsub = p.add_subparsers(dest="reference_command", metavar="ACTION", required=True)
    b = rsub.add_parser(
        "build",
        help="profile a CSV, Parquet or JSON Lines file into a reference profile file",
        description="Profile training data into a reference profile (the wire format holding one "
        "profile), ready to upload with PUT /v1/models/{model}/versions/{version}/reference. The profile "
        "records which columns are outputs and each column's kind, so `driftline drift ref.dlp data.csv` "
        "needs no --output, and keeps a bounded sample of raw rows for drill-down reports.",
    )
    b.add_argument("data", help="training data: .csv, .parquet or .jsonl (with --engine spark: Parquet "
                   "file, directory, glob or URI)")
    b.add_argument("--model", required=True, help="model name")
    b.add_argument("--version", required=True, dest="model_version", help="model version")
    b.add_argument("--out", required=True, help="profile file to write")
    b.add_argument("--exclude", default="", help="comma-separated columns to ignore (ids, timestamps)")
    b.add_argument("--reservoir", type=int, default=DEFAULT_RESERVOIR, metavar="ROWS",
                   help=f"keep a uniform sample of this many raw rows for Evidently drill-down reports "
                   f"(default {DEFAULT_RESERVOIR}; 0 turns it off)")
    b.add_argument("--no-reservoir", dest="reservoir", action="store_const", const=0,
                   help="keep no raw rows (same as --reservoir 0)")
    b.add_argument("--engine", choices=("local", "spark"), default="local",
                   help="local: this process (default); spark: one profile per Spark partition, merged "
                   "(needs the spark extra; master from spark-submit or PYSPARK_SUBMIT_ARGS, else local[*])")
    b.add_argument("--reconstruction", action="store_true",
                   help="also fit a PCA of the numeric features and store it with the reference, for "
                   "multivariate (data-reconstruction) drift on sidecars and the service (docs/statistics.md)")
    b.add_argument("--reconstruction-variance", type=float, default=0.65, metavar="SHARE",
                   help="share of the standardised variance the kept components explain (default 0.65)")
    add_profile_config_args(b)
    _add_calibration_args(b)
    reference_remote.add_upload_options(b)
    b.set_defaults(func=_build)
    reference_remote.register(rsub)


def _build(args: argparse.Namespace) -> int:
    from ._args import column_list

    if args.reservoir < 0:
        raise ConfigError(f"--reservoir must be >= 0, got {args.reservoir}")
    key = StreamKey.of(args.model, args.model_version, variant="reference", source="training")
    config = replace(profile_config_from_args(args), reservoir_size=args.reservoir)
    if args.label and args.engine == "spark":
        raise ConfigError("--label needs --engine local (the calibration pass reads the file here)")
    if args.reconstruction and args.engine == "spark":
        raise ConfigError("--reconstruction needs --engine local (it reads the file twice more)")
    if not 0.0 < args.reconstruction_variance <= 1.0:
        raise ConfigError(f"--reconstruction-variance must be in (0, 1], got {args.reconstruction_variance}")
    if args.engine == "spark":
        from driftline.spark import profile_parquet

        prof = profile_parquet(args.data, key, config, outputs=args.output, exclude=column_list(args.exclude))
    else:
        data = DataFile(args.data)
        exclude = column_list(args.exclude) + ([args.label] if args.label else [])
        with ProgressBar(data.total, f"profiling {data.path.name}", unit=data.unit) as bar:
            prof = profile_file(data, key, config, outputs=args.output, exclude=exclude,
                                on_progress=bar.update_to)
        if args.label:
            prof.calibration = calibrate_file(data, prof, args.score, args.label, threshold=args.threshold,
                                              positive=args.positive, bins=args.calibration_bins)
        if args.reconstruction:
            from driftline.profiling import attach_reconstruction

            attach_reconstruction(data, prof, variance=args.reconstruction_variance)
    size = write_profile_file(args.out, prof)
    print(
        f"wrote {args.out}: {prof.rows} rows, {len(prof.features)} features, "
        f"{len(prof.outputs)} outputs, {len(prof.reservoir.rows) if prof.reservoir else 0} sample rows, "
        f"{size} bytes" + (f", calibration of {prof.calibration['output']!r} on {prof.calibration['rows']} labelled "
                           f"rows" if prof.calibration else ""),
        file=sys.stdout,
    )
    if prof.reconstruction is not None:
        model = prof.reconstruction.decoded_model()
        assert model is not None
        print(f"reconstruction model {model.digest}: {len(model.features)} numeric features, {model.k} "
              f"components ({model.explained:.0%} of the variance)", file=sys.stdout)
    return reference_remote.upload_after_build(args, args.out) if args.upload else 0


def _add_calibration_args(b: argparse.ArgumentParser) -> None:
    """Options of the label-free performance estimate (driftline/estimate.py): all optional."""
    g = b.add_argument_group("calibration (label-free performance estimates)")
    g.add_argument("--label", default=None, metavar="COL",
                   help="a label column of the training data: fit the score calibration the service's "
                   "performance estimate needs (the column is not profiled as a feature)")
    g.add_argument("--score", default=None, metavar="COL",
                   help="the output holding the positive-class score (default: the only numeric output)")
    g.add_argument("--threshold", type=float, default=0.5, help="decision threshold on the score (default 0.5)")
    g.add_argument("--positive", default="1", help="the positive label (default 1)")
    g.add_argument("--calibration-bins", type=int, default=64, metavar="N",
                   help="quantile bins of the calibration before isotonic pooling (2-256, default 64)")
