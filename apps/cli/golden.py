"""``driftline golden build``: pack inputs and the cloud model's outputs into a golden set file."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from driftline.errors import GoldenSetError

__all__ = ["read_tensors", "register"]

NUMERIC_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("golden", help="golden sets: check that devices compute what the cloud computes")
    gsub = p.add_subparsers(dest="golden_command", metavar="ACTION", required=True)
    b = gsub.add_parser(
        "build",
        help="pack inputs and the cloud model's outputs into a golden set file",
        description="Pack a golden set: inputs and the outputs the cloud model computed for them, with the "
        "model, its version and the tolerances a device must meet (format: docs/wire-format.md, 'Golden "
        "sets'). The sidecar (golden.paths) runs the inputs through the device's model server at start, after "
        "a model-version change and on a schedule, and reports how far the device's outputs are from these. "
        "INPUTS and OUTPUTS are .npz files (one tensor per array, first axis = case) or CSV / Parquet / JSON "
        "Lines files (one 1-D tensor per column, or all columns stacked into one 2-D tensor with --stack-*); "
        "row i of OUTPUTS is the cloud's answer to row i of INPUTS.",
    )
    b.add_argument("inputs", help="the inputs: .npz, .csv, .parquet or .jsonl")
    b.add_argument("outputs", help="the cloud model's outputs for them, row for row, same formats")
    b.add_argument("--model", required=True, help="model name (as the model server and the service know it)")
    b.add_argument("--version", required=True, dest="model_version", help="the cloud model's version")
    b.add_argument("--out", required=True, help="golden set file to write (e.g. golden-v3.dlg)")
    b.add_argument("--name", default=None, help="a name shown in results (default: the file's stem)")
    b.add_argument("--stack-inputs", metavar="TENSOR", help="tabular INPUTS: stack all columns into one "
                   "[cases, columns] tensor of this name (column order as in the file)")
    b.add_argument("--stack-outputs", metavar="TENSOR", help="tabular OUTPUTS: the same for the outputs")
    b.add_argument("--input-dtype", choices=NUMERIC_DTYPES, help="cast numeric inputs to this dtype "
                   "(default: as read; tabular numbers read as float64)")
    b.add_argument("--output-dtype", choices=NUMERIC_DTYPES, help="cast numeric outputs to this dtype: the "
                   "device must answer with the same dtype")
    b.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance (default 1e-5)")
    b.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (default 1e-4); an element "
                   "passes when |device - cloud| <= atol + rtol * |cloud|")
    b.add_argument("--min-top1", type=float, default=1.0, help="least top-1 agreement (default 1.0)")
    b.add_argument("--max-score-ks", type=float, default=0.05, help="largest KS statistic between device and "
                   "cloud scores (default 0.05)")
    b.add_argument("--score-output", help="output whose values the KS statistic compares (default: the "
                   "first float output)")
    b.add_argument("--top1-output", help="output top-1 agreement reads: 2-D scores by argmax, or 1-D labels "
                   "(default: the first 2-D float output, else the first label output)")
    b.set_defaults(func=_build)


def read_tensors(path: str | Path, stack: str | None = None, dtype: str | None = None) -> dict[str, np.ndarray]:
    """Named tensors (first axis = case) from an .npz file or a tabular data file."""
    p = Path(path)
    if p.suffix.lower() == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                tensors = {k: np.asarray(z[k]) for k in z.files}
        except (OSError, ValueError) as exc:
            raise GoldenSetError(f"{p}: not a readable .npz file ({exc})") from None
    else:
        from driftline.datafiles import DataFile

        parts: dict[str, list[np.ndarray]] = {}
        for cols, _done in DataFile(p).batches():
            for k, v in cols.items():
                parts.setdefault(k, []).append(v)
        tensors = {k: np.concatenate(v) for k, v in parts.items()}
        if stack:
            if any(v.dtype.kind not in "fiub" for v in tensors.values()):
                raise GoldenSetError(f"{p}: --stack needs numeric columns only")
            tensors = {stack: np.column_stack(list(tensors.values()))} if tensors else {}
    if not tensors:
        raise GoldenSetError(f"{p}: no tensors or columns")
    if dtype:
        tensors = {k: v.astype(dtype) if v.dtype.kind in "fiub" else v for k, v in tensors.items()}
    return tensors


def _build(args: argparse.Namespace) -> int:
    from driftline.conformance import GoldenSet, Tolerances, write_golden_file

    inputs = read_tensors(args.inputs, args.stack_inputs, args.input_dtype)
    outputs = read_tensors(args.outputs, args.stack_outputs, args.output_dtype)
    golden = GoldenSet(args.model, args.model_version, inputs, outputs,
                       Tolerances(args.atol, args.rtol, args.min_top1, args.max_score_ks),
                       name=args.name or Path(args.out).stem, score_output=args.score_output,
                       top1_output=args.top1_output, created_at=time.time())
    size = write_golden_file(args.out, golden)
    shapes = lambda ts: ", ".join(f"{k}{list(v.shape)} {v.dtype}" for k, v in ts.items())  # noqa: E731
    print(f"wrote {args.out}: {golden.cases} cases of {args.model} {args.model_version}; inputs {shapes(inputs)}; "
          f"outputs {shapes(outputs)}; {size} bytes; digest {golden.digest}", file=sys.stdout)
    return 0
