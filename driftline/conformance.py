"""Golden-set conformance: does a device compute the same outputs as the cloud for the same inputs?

A *golden set* is a small bundle of inputs and the cloud model's outputs for them, with the model,
its version and the tolerances a device must meet. The sidecar runs the inputs through the local
model server and :func:`compare` judges what came back, tensor by tensor: shape, dtype, maximum
absolute and relative difference, top-1 agreement and the two-sample Kolmogorov-Smirnov statistic
of the scores. Pure: arrays in, a frozen :class:`ConformanceResult` out; the only I/O helpers are
:func:`read_golden_file` and :func:`write_golden_file` (``pathlib`` only).

The file (``docs/wire-format.md``, "Golden sets") is one MessagePack map::

    {"format": "driftline-golden", "version": 1, "model": str, "model_version": str, "name": str,
     "created_at": float, "tolerances": {...}, "score_output": str | None, "top1_output": str | None,
     "inputs":  [{"name": str, "dtype": "float32" | ... | "str", "shape": [cases, ...], "data": bytes | [str]}],
     "outputs": [same]}

Numeric ``data`` is the tensor's little-endian bytes in row-major order; ``str`` tensors hold a list
of strings. Every tensor's first dimension is the number of cases.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from .errors import GoldenSetError, WireFormatError
from .wirecheck import check_name

__all__ = [
    "CONFORMANCE_TRIGGERS",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_CASES",
    "MAX_CONFORMANCE_ENTRIES",
    "ConformanceResult",
    "GoldenSet",
    "Tolerances",
    "check_conformance_entries",
    "compare",
    "decode_golden",
    "encode_golden",
    "entry_cohort",
    "ks_statistic",
    "read_golden_file",
    "write_golden_file",
]

FORMAT = "driftline-golden"
FORMAT_VERSION = 1
MAX_CASES = 100_000
"""Cases one golden set may hold: enough for a conformance check, small enough to run on a device."""
MAX_TENSORS = 64
MAX_GOLDEN_BYTES = 256 * 1024 * 1024
MAX_CONFORMANCE_ENTRIES = 16
"""Conformance results one envelope may carry (one per golden set the device runs)."""
CONFORMANCE_TRIGGERS = ("start", "version_change", "schedule", "manual")
DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
          "float64", "str")


@dataclass(frozen=True, slots=True)
class Tolerances:
    """What a device must meet; an element passes when ``|actual - expected| <= atol + rtol * |expected|``
    (numpy's ``isclose`` rule), the set when every element does, top-1 agreement is at least
    ``min_top1_agreement`` and the score KS statistic at most ``max_score_ks``."""

    atol: float = 1e-5
    rtol: float = 1e-4
    min_top1_agreement: float = 1.0
    max_score_ks: float = 0.05

    def __post_init__(self) -> None:
        for name in ("atol", "rtol", "min_top1_agreement", "max_score_ks"):
            v = getattr(self, name)
            if type(v) not in (int, float) or not math.isfinite(v) or v < 0:
                raise GoldenSetError(f"tolerance {name} must be a finite number >= 0, got {v!r}")
        if self.min_top1_agreement > 1 or self.max_score_ks > 1:
            raise GoldenSetError("min_top1_agreement and max_score_ks must be at most 1")

    def to_dict(self) -> dict[str, float]:
        return {"atol": float(self.atol), "rtol": float(self.rtol), "min_top1_agreement": float(self.min_top1_agreement),
                "max_score_ks": float(self.max_score_ks)}


@dataclass(frozen=True)
class GoldenSet:
    """Inputs and the cloud model's outputs for them (tensors whose first axis is the case), as built by
    ``driftline golden build``; ``score_output`` and ``top1_output`` name the outputs the KS statistic
    and top-1 agreement read (None: chosen as in :func:`compare`)."""

    model: str
    model_version: str
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]
    tolerances: Tolerances = field(default_factory=Tolerances)
    name: str = "golden"
    score_output: str | None = None
    top1_output: str | None = None
    created_at: float = 0.0

    def __post_init__(self) -> None:
        for what, v in (("model", self.model), ("model_version", self.model_version), ("name", self.name)):
            if not isinstance(v, str) or not v or len(v) > 128:
                raise GoldenSetError(f"golden set {what} must be a non-empty string of at most 128 characters")
        if not self.inputs or not self.outputs:
            raise GoldenSetError("a golden set needs at least one input and one output tensor")
        if len(self.inputs) + len(self.outputs) > MAX_TENSORS:
            raise GoldenSetError(f"a golden set holds at most {MAX_TENSORS} tensors")
        cases = {int(np.shape(a)[0]) if np.ndim(a) else -1 for a in (*self.inputs.values(), *self.outputs.values())}
        if len(cases) != 1 or -1 in cases:
            raise GoldenSetError("every tensor of a golden set must have the same first dimension (the cases)")
        n = cases.pop()
        if not 0 < n <= MAX_CASES:
            raise GoldenSetError(f"a golden set holds 1 to {MAX_CASES} cases, got {n}")
        for name in (self.score_output, self.top1_output):
            if name is not None and name not in self.outputs:
                raise GoldenSetError(f"output {name!r} named for scores or top-1 is not in the golden set")

    @property
    def cases(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    @property
    def digest(self) -> str:
        """A short content hash: which golden set a result is about."""
        return hashlib.sha256(encode_golden(self)).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ConformanceResult:
    """One comparison of a device's outputs with a golden set's (an immutable value).

    ``max_abs_diff`` and ``max_rel_diff`` are over the numeric outputs whose shapes match (``inf`` when
    a value is NaN or infinite on one side only); ``max_rel_diff`` divides by ``|expected|`` where it is
    not 0. ``mismatched_values`` counts elements outside the tolerance (unequal strings included).
    ``top1_agreement`` and ``score_ks`` are None when no output can give them.
    """

    cases: int
    passed: bool
    max_abs_diff: float
    max_rel_diff: float
    mismatched_values: int
    top1_agreement: float | None
    score_ks: float | None
    shape_mismatches: tuple[str, ...] = ()
    dtype_mismatches: tuple[str, ...] = ()
    missing_outputs: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    def to_wire(self, golden: GoldenSet, *, trigger: str, evaluated_at: float,
                cohort: Mapping[str, str] | None = None, runtime_version: str | None = None) -> dict[str, Any]:
        """The envelope's ``conformance`` entry for this result (docs/wire-format.md)."""
        entry: dict[str, Any] = {
            "model": golden.model, "model_version": golden.model_version, "golden": golden.name[:128],
            "digest": golden.digest, "trigger": trigger, "evaluated_at": float(evaluated_at),
            "passed": self.passed, "cases": self.cases, "max_abs_diff": float(self.max_abs_diff),
            "max_rel_diff": float(self.max_rel_diff), "mismatched_values": self.mismatched_values,
            "top1_agreement": self.top1_agreement, "score_ks": self.score_ks,
            "shape_mismatches": len(self.shape_mismatches) + len(self.missing_outputs),
            "dtype_mismatches": len(self.dtype_mismatches),
            "cohort": [[k, v] for k, v in sorted((cohort or {}).items())][:32],
        }
        if runtime_version is not None:
            entry["served_version"] = runtime_version[:128]
        return entry


# ---- comparison ------------------------------------------------------------------------------------
def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic ``sup_x |F_a(x) - F_b(x)|`` of two samples, exactly.

    Examples
    --------
    >>> ks_statistic(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    0.0
    >>> ks_statistic(np.array([0.0, 0.0]), np.array([1.0, 1.0]))
    1.0
    """
    a = np.sort(np.asarray(a, dtype=np.float64).ravel())
    b = np.sort(np.asarray(b, dtype=np.float64).ravel())
    if not len(a) or not len(b):
        return 0.0
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def _is_text(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "OUS"


def _dtype_name(arr: np.ndarray) -> str:
    return "str" if _is_text(arr) else arr.dtype.newbyteorder("=").name


def _pick(golden: GoldenSet) -> tuple[str | None, str | None]:
    outs = golden.outputs
    floats = [n for n, a in outs.items() if a.dtype.kind == "f"]
    top1 = golden.top1_output
    if top1 is None:
        wide = [n for n in floats if outs[n].ndim == 2 and outs[n].shape[1] >= 2]
        labels = [n for n, a in outs.items() if a.ndim == 1 and a.dtype.kind in "iubOUS"]
        top1 = (wide + labels)[0] if wide or labels else None
    score = golden.score_output or (floats[0] if floats else None)
    return score, top1


def _top1(expected: np.ndarray, actual: np.ndarray) -> float:
    if expected.ndim == 2 and expected.shape[1] >= 2 and expected.dtype.kind == "f":
        return float(np.mean(np.argmax(expected, axis=1) == np.argmax(actual.astype(np.float64), axis=1)))
    e = expected.reshape(len(expected), -1)
    a = actual.reshape(len(actual), -1)
    if _is_text(expected) or _is_text(actual):
        e, a = e.astype(str), a.astype(str)
    return float(np.mean(np.all(e == a, axis=1)))


def compare(golden: GoldenSet, actual: Mapping[str, Any]) -> ConformanceResult:
    """Judge a device's outputs for ``golden.inputs`` against ``golden.outputs`` with its tolerances.

    Top-1 agreement reads ``top1_output`` (default: the first 2-D float output, by argmax over its
    last axis, else the first 1-D integer or string output, by equality); the KS statistic reads
    ``score_output`` (default: the first float output), all its values flattened. An output with the
    wrong shape or missing is not compared value by value and fails the set; so does a dtype change.
    """
    tol = golden.tolerances
    max_abs = max_rel = 0.0
    mismatched = 0
    shapes: list[str] = []
    dtypes: list[str] = []
    missing: list[str] = []
    comparable: dict[str, np.ndarray] = {}
    for name, exp in golden.outputs.items():
        if name not in actual:
            missing.append(name)
            continue
        act = np.asarray(actual[name])
        if act.shape != exp.shape:
            shapes.append(name)
            continue
        if _dtype_name(act) != _dtype_name(exp):
            dtypes.append(name)
        comparable[name] = act
        if _is_text(exp) or _is_text(act) or exp.dtype.kind == "b" or act.dtype.kind == "b":
            mismatched += int(np.sum(exp.astype(str) != act.astype(str)))
            continue
        e = exp.astype(np.float64)
        a = act.astype(np.float64)
        both_nan = np.isnan(e) & np.isnan(a)
        same_inf = np.isinf(e) & (e == a)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.where(both_nan | same_inf, 0.0, np.abs(a - e))
        diff = np.where(np.isnan(diff), np.inf, diff)
        if diff.size:
            max_abs = max(max_abs, float(diff.max()))
            nz = e != 0
            if nz.any():
                with np.errstate(invalid="ignore", over="ignore"):
                    rel = np.where(both_nan | same_inf, 0.0, diff / np.abs(np.where(nz, e, 1.0)))
                rel = np.where(np.isnan(rel), np.inf, rel)
                max_rel = max(max_rel, float(rel[nz].max()))
            with np.errstate(invalid="ignore", over="ignore"):
                bound = tol.atol + tol.rtol * np.abs(np.where(np.isfinite(e), e, 0.0))
            mismatched += int(np.sum(~(diff <= bound)))
    score_name, top1_name = _pick(golden)
    top1 = _top1(golden.outputs[top1_name], comparable[top1_name]) if top1_name in comparable else None
    ks = None
    if score_name in comparable and not _is_text(comparable[score_name]):
        e = golden.outputs[score_name].astype(np.float64).ravel()
        a = comparable[score_name].astype(np.float64).ravel()
        ks = ks_statistic(e[np.isfinite(e)], a[np.isfinite(a)])
    reasons = []
    if missing:
        reasons.append(f"missing outputs: {', '.join(missing)}")
    if shapes:
        reasons.append(f"shape differs: {', '.join(shapes)}")
    if dtypes:
        reasons.append(f"dtype differs: {', '.join(dtypes)}")
    if mismatched:
        reasons.append(f"{mismatched} values outside atol {tol.atol:g} + rtol {tol.rtol:g}")
    if top1 is not None and top1 < tol.min_top1_agreement:
        reasons.append(f"top-1 agreement {top1:.4f} < {tol.min_top1_agreement:g}")
    if ks is not None and ks > tol.max_score_ks:
        reasons.append(f"score KS {ks:.4f} > {tol.max_score_ks:g}")
    return ConformanceResult(golden.cases, not reasons, max_abs, max_rel, mismatched, top1, ks, tuple(shapes),
                             tuple(dtypes), tuple(missing), tuple(reasons))


# ---- the file ---------------------------------------------------------------------------------------
def _tensor_doc(name: str, arr: np.ndarray) -> dict[str, Any]:
    arr = np.asarray(arr)
    if _is_text(arr):
        return {"name": name, "dtype": "str", "shape": list(arr.shape), "data": [str(v) for v in arr.ravel()]}
    dt = _dtype_name(arr)
    if dt not in DTYPES:
        raise GoldenSetError(f"tensor {name!r} has dtype {arr.dtype}, which a golden set cannot hold")
    return {"name": name, "dtype": dt, "shape": list(arr.shape),
            "data": np.ascontiguousarray(arr, dtype=np.dtype(dt).newbyteorder("<")).tobytes()}


def _tensor(raw: Any, where: str) -> tuple[str, np.ndarray]:
    if not isinstance(raw, dict):
        raise GoldenSetError(f"{where} is not a map")
    name, dt, shape, data = raw.get("name"), raw.get("dtype"), raw.get("shape"), raw.get("data")
    if not isinstance(name, str) or not 0 < len(name) <= 256:
        raise GoldenSetError(f"{where} has no valid name")
    if dt not in DTYPES:
        raise GoldenSetError(f"{where} {name!r} has unknown dtype {dt!r}")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 8
            or not all(type(d) is int and 0 <= d <= MAX_GOLDEN_BYTES for d in shape)):
        raise GoldenSetError(f"{where} {name!r} has an invalid shape")
    n = math.prod(shape)
    if dt == "str":
        if not isinstance(data, list) or len(data) != n or not all(isinstance(v, str) for v in data):
            raise GoldenSetError(f"{where} {name!r}: {n} strings expected")
        return name, np.array(data, dtype=object).reshape(shape)
    item = np.dtype(dt).newbyteorder("<")
    if not isinstance(data, bytes) or len(data) != n * item.itemsize:
        raise GoldenSetError(f"{where} {name!r}: {n * item.itemsize} data bytes expected for shape {shape}")
    return name, np.frombuffer(data, dtype=item).astype(np.dtype(dt)).reshape(shape)


def encode_golden(golden: GoldenSet) -> bytes:
    """The golden set as bytes (deterministic for equal sets)."""
    return msgpack.packb({
        "format": FORMAT, "version": FORMAT_VERSION, "model": golden.model, "model_version": golden.model_version,
        "name": golden.name, "created_at": float(golden.created_at), "tolerances": golden.tolerances.to_dict(),
        "score_output": golden.score_output, "top1_output": golden.top1_output,
        "inputs": [_tensor_doc(k, v) for k, v in golden.inputs.items()],
        "outputs": [_tensor_doc(k, v) for k, v in golden.outputs.items()],
    }, use_bin_type=True)


def decode_golden(data: bytes, *, max_bytes: int = MAX_GOLDEN_BYTES) -> GoldenSet:
    """Read a golden set; every defect is a :class:`GoldenSetError` naming it, never another exception."""
    if len(data) > max_bytes:
        raise GoldenSetError(f"golden set is {len(data)} bytes, over the {max_bytes}-byte limit")
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=max_bytes, max_str_len=1 << 20,
                              max_array_len=MAX_CASES * 64, max_map_len=64, max_ext_len=0)
    except Exception as exc:  # noqa: BLE001 - any unpack failure is a file defect
        raise GoldenSetError(f"not a golden set file: {type(exc).__name__}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise GoldenSetError(f"not a golden set file (no 'format': '{FORMAT}')")
    if doc.get("version") != FORMAT_VERSION:
        raise GoldenSetError(f"golden set format version {doc.get('version')!r} is not supported "
                             f"(this build reads {FORMAT_VERSION})")
    try:
        tol_raw = doc.get("tolerances") or {}
        if not isinstance(tol_raw, dict):
            raise GoldenSetError("golden set tolerances is not a map")
        tol = Tolerances(**{k: tol_raw[k] for k in ("atol", "rtol", "min_top1_agreement", "max_score_ks")
                            if k in tol_raw})
        tensors = {}
        for group in ("inputs", "outputs"):
            items = doc.get(group)
            if not isinstance(items, list) or len(items) > MAX_TENSORS:
                raise GoldenSetError(f"golden set {group} is not a list of at most {MAX_TENSORS} tensors")
            tensors[group] = dict(_tensor(t, f"{group[:-1]} #{i}") for i, t in enumerate(items))
        created = doc.get("created_at", 0.0)
        model: Any = doc.get("model")  # GoldenSet checks every field's type
        version: Any = doc.get("model_version")
        return GoldenSet(model, version, tensors["inputs"], tensors["outputs"], tol,
                         doc.get("name", "golden"), doc.get("score_output"), doc.get("top1_output"),
                         float(created) if type(created) in (int, float) else 0.0)
    except GoldenSetError:
        raise
    except (WireFormatError, TypeError, ValueError) as exc:
        raise GoldenSetError(f"golden set is malformed: {exc}") from None


def write_golden_file(path: str | Path, golden: GoldenSet) -> int:
    """I/O helper: write a golden set file; returns its size in bytes."""
    data = encode_golden(golden)
    Path(path).write_bytes(data)
    return len(data)


def read_golden_file(path: str | Path, *, max_bytes: int = MAX_GOLDEN_BYTES) -> GoldenSet:
    """I/O helper: read a golden set file (:class:`GoldenSetError` when it cannot be read)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise GoldenSetError(f"cannot read golden set {p}: {exc.strerror or exc}") from None
    try:
        return decode_golden(data, max_bytes=max_bytes)
    except GoldenSetError as exc:
        raise GoldenSetError(f"{p}: {exc}") from None


# ---- the envelope key ---------------------------------------------------------------------------------
_ENTRY_FLOATS = ("max_abs_diff", "max_rel_diff")
_ENTRY_RATIOS = ("top1_agreement", "score_ks")
_ENTRY_COUNTS = ("cases", "mismatched_values", "shape_mismatches", "dtype_mismatches")
ENTRY_KEYS = ("model", "model_version", "golden", "digest", "trigger", "evaluated_at", "passed", *_ENTRY_FLOATS,
              *_ENTRY_RATIOS, *_ENTRY_COUNTS, "cohort", "served_version", "error")


def check_conformance_entries(raw: Any) -> list[dict[str, Any]]:
    """The envelope's optional ``conformance`` list checked and cleaned (unknown keys dropped);
    :class:`WireFormatError` names the first bad field. Bounds: docs/wire-format.md."""
    if not isinstance(raw, list):
        raise WireFormatError("envelope conformance is not an array")
    if len(raw) > MAX_CONFORMANCE_ENTRIES:
        raise WireFormatError(f"envelope conformance has {len(raw)} entries, over {MAX_CONFORMANCE_ENTRIES}")
    out = []
    for i, e in enumerate(raw):
        what = f"conformance #{i}"
        if not isinstance(e, dict) or len(e) > 32:
            raise WireFormatError(f"{what} is not a map of at most 32 entries")
        check_name(e.get("model"), f"{what} model", empty=False)
        check_name(e.get("model_version"), f"{what} model_version", empty=False)
        for key in ("golden", "digest", "served_version"):
            if e.get(key) is not None:
                check_name(e[key], f"{what} {key}", limit=128)
        if e.get("error") is not None:
            check_name(e["error"], f"{what} error", limit=256)
        if e.get("trigger") not in CONFORMANCE_TRIGGERS:
            raise WireFormatError(f"{what} trigger must be one of {', '.join(CONFORMANCE_TRIGGERS)}")
        if type(e.get("passed")) is not bool:
            raise WireFormatError(f"{what} passed must be a boolean")
        at: Any = e.get("evaluated_at")
        if type(at) not in (int, float) or not math.isfinite(at):
            raise WireFormatError(f"{what} evaluated_at must be a finite number")
        for key in _ENTRY_FLOATS:
            v = e.get(key, 0.0)
            if type(v) not in (int, float) or math.isnan(v) or v < 0:
                raise WireFormatError(f"{what} {key} must be a number >= 0")
        for key in _ENTRY_RATIOS:
            v = e.get(key)
            if v is not None and (type(v) not in (int, float) or not 0 <= v <= 1):
                raise WireFormatError(f"{what} {key} must be null or in [0, 1]")
        for key in _ENTRY_COUNTS:
            v = e.get(key, 0)
            if type(v) is not int or not 0 <= v <= 2**48:
                raise WireFormatError(f"{what} {key} must be an integer in [0, 2**48]")
        cohort = e.get("cohort", [])
        if not isinstance(cohort, list) or len(cohort) > 32:
            raise WireFormatError(f"{what} cohort is not an array of at most 32 pairs")
        for pair in cohort:
            if not isinstance(pair, list) or len(pair) != 2:
                raise WireFormatError(f"{what} cohort entry is not a [label, value] pair")
            check_name(pair[0], f"{what} cohort label", empty=False)
            check_name(pair[1], f"{what} cohort value")
        out.append({k: e[k] for k in ENTRY_KEYS if k in e})
    return out


def entry_cohort(entry: Mapping[str, Any]) -> dict[str, str]:
    """A checked entry's cohort labels as a dict."""
    return {str(k): str(v) for k, v in entry.get("cohort", [])}
