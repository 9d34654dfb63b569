"""Open Inference Protocol v2 (KServe, Triton, MLServer): request and response tensors as rows.

Pure: bytes in, columns out. A tensor is ``{"name", "shape", "datatype", "data"}`` with row-major
data and the batch dimension first, or, with the binary tensor extension, its bytes follow the JSON
header (whose length the ``Inference-Header-Content-Length`` header gives) in input order, sized by
``parameters.binary_data_size``. Column naming for a tensor of shape ``[B, ...]``:

* ``[B]`` or ``[B, 1]``: one column named after the tensor;
* ``[B, D...]`` with up to ``max_features`` values per row: ``name[0]`` .. ``name[k]`` (flattened),
  or the names configured for that tensor;
* wider numeric tensors (images, embeddings): four summary columns per row, ``name:mean``,
  ``name:std``, ``name:min``, ``name:max``, so drift is still visible without thousands of sketches.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import CaptureError

__all__ = ["INFER_PATH", "Exchange", "InferRows", "decode_tensors", "parse_exchange", "parse_outputs",
           "tensor_columns"]

INFER_PATH = re.compile(r"^/v2/models/(?P<model>[^/?]+)(?:/versions/(?P<version>[^/?]+))?/infer$")
DTYPES: dict[str, str | None] = {
    "BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "<i1",
    "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
    "BYTES": None,
}
MAX_ELEMENTS = 50_000_000


@dataclass(slots=True)
class Exchange:
    """One captured inference call, as the proxy saw it."""

    model: str
    path_version: str | None
    request: bytes
    request_json_len: int | None
    response: bytes
    response_json_len: int | None
    request_id: str | None = None
    latency_ms: float | None = None


@dataclass(slots=True)
class InferRows:
    """What the monitor gets: ``n`` rows of features (inputs) and outputs."""

    n: int
    features: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    request_id: str | None
    model_version: str | None
    outputs_dropped: bool = False


def _split(body: bytes, json_len: int | None) -> tuple[Any, memoryview]:
    if json_len is not None and not 0 < json_len <= len(body):
        raise CaptureError(f"Inference-Header-Content-Length {json_len} does not fit a {len(body)}-byte body")
    head = body if json_len is None else body[:json_len]
    try:
        doc = json.loads(head)
    except ValueError as exc:
        raise CaptureError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CaptureError("an inference body must be a JSON object", "wrong_type")
    return doc, memoryview(body)[len(head):]


def _bytes_elements(raw: memoryview, count: int) -> np.ndarray:
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(raw):
            raise CaptureError("BYTES tensor is truncated")
        size = int.from_bytes(raw[pos : pos + 4], "little")
        pos += 4
        out.append(bytes(raw[pos : pos + size]).decode("utf-8", "replace"))
        pos += size
    return np.asarray(out, dtype=object)


def _tensor(t: Any, binary: memoryview, offset: int) -> tuple[str, np.ndarray, int]:
    if not isinstance(t, Mapping):
        raise CaptureError("a tensor must be an object", "wrong_type")
    name, shape, dtype = t.get("name"), t.get("shape"), t.get("datatype")
    if not isinstance(name, str) or not name:
        raise CaptureError("tensor without a name")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise CaptureError(f"tensor {name!r} has a bad shape {shape!r}")
    if dtype not in DTYPES:
        raise CaptureError(f"tensor {name!r} has unknown datatype {dtype!r}", "wrong_type")
    count = math.prod(shape)  # exact Python ints, and a tenth of np.prod's cost per tensor
    if count > MAX_ELEMENTS:
        raise CaptureError(f"tensor {name!r} has {count} elements", "oversized")
    params = t.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, Mapping) else None
    np_dtype = DTYPES[dtype]
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise CaptureError(f"tensor {name!r}: binary_data_size {size!r} does not fit the body")
        raw = binary[offset : offset + size]
        offset += size
        arr = _bytes_elements(raw, count) if np_dtype is None else np.frombuffer(raw, dtype=np_dtype)
    else:
        data = t.get("data")
        if data is None:
            raise CaptureError(f"tensor {name!r} has no data")
        try:
            arr = np.asarray(data, dtype=object if np_dtype is None else np.dtype(np_dtype).newbyteorder("="))
        except (ValueError, TypeError, OverflowError) as exc:
            raise CaptureError(f"tensor {name!r}: data does not match {dtype}: {exc}", "wrong_type") from None
    if arr.size != count:
        raise CaptureError(f"tensor {name!r}: shape {shape} needs {count} values, got {arr.size}")
    return name, arr.reshape(shape), offset


def decode_tensors(body: bytes, json_len: int | None, key: str) -> tuple[dict[str, Any], list[tuple[str, np.ndarray]]]:
    """The JSON document and its ``key`` (``inputs`` or ``outputs``) tensors, decoded."""
    doc, binary = _split(body, json_len)
    tensors = doc.get(key)
    if not isinstance(tensors, list):
        raise CaptureError(f"no {key!r} list")
    out, offset = [], 0
    for t in tensors:
        name, arr, offset = _tensor(t, binary, offset)
        out.append((name, arr))
    return doc, out


def tensor_columns(name: str, arr: np.ndarray, names: Sequence[str] | None, max_features: int) -> dict[str, np.ndarray]:
    """Columns of one tensor, batch dimension first (see the module docstring)."""
    if arr.ndim == 0:
        return {name: arr.reshape(1)}
    if arr.ndim == 1:
        return {name: arr}
    flat = arr.reshape(arr.shape[0], -1)
    width = flat.shape[1]
    if width == 1:
        return {name: flat[:, 0]}
    if width <= max_features:
        cols = names if names is not None and len(names) == width else _flat_names(name, width)
        return dict(zip(cols, flat.T, strict=True))  # flat.T yields the columns as views, in C
    if flat.dtype.kind not in "fiub":
        return {}
    x = flat.astype(np.float64)
    return {f"{name}:mean": x.mean(axis=1), f"{name}:std": x.std(axis=1), f"{name}:min": x.min(axis=1),
            f"{name}:max": x.max(axis=1)}


@functools.lru_cache(maxsize=1024)
def _flat_names(name: str, width: int) -> tuple[str, ...]:
    """``name[0]`` .. ``name[width-1]``: the same few tensors arrive on every call, so built once."""
    return tuple(f"{name}[{j}]" for j in range(width))


def _columns(tensors: list[tuple[str, np.ndarray]], names: Mapping[str, Sequence[str]],
             max_features: int) -> tuple[int | None, dict[str, np.ndarray]]:
    n: int | None = None
    cols: dict[str, np.ndarray] = {}
    for tname, arr in tensors:
        rows = 1 if arr.ndim == 0 else arr.shape[0]
        if n is None:
            n = rows
        elif rows != n:
            raise CaptureError(f"tensor {tname!r} has batch size {rows}, another has {n}")
        cols.update(tensor_columns(tname, arr, names.get(tname), max_features))
    return n, cols


def parse_exchange(ex: Exchange, feature_names: Mapping[str, Sequence[str]] | None = None,
                   max_features: int = 256) -> InferRows:
    """Rows of one successful inference call; raises CaptureError when the request is unreadable."""
    names = feature_names or {}
    req, inputs = decode_tensors(ex.request, ex.request_json_len, "inputs")
    n, features = _columns(inputs, names, max_features)
    if not n or not features:
        raise CaptureError("the request has no usable input tensor")
    outputs, version, dropped = parse_outputs(ex.response, ex.response_json_len, n, names, max_features)
    rid = req.get("id")
    request_id = rid if isinstance(rid, str) and rid else ex.request_id
    return InferRows(n, features, outputs, request_id, version or ex.path_version, dropped)


def parse_outputs(body: bytes, json_len: int | None, n: int, feature_names: Mapping[str, Sequence[str]] | None = None,
                  max_features: int = 256) -> tuple[dict[str, np.ndarray], str | None, bool]:
    """The output columns of an answer to a request of ``n`` rows, the version it names, and whether its
    outputs were dropped (unreadable, or another batch size). Never raises: an answer is only extra.

    Apart from :func:`parse_exchange` so that a second answer to the same request (a shadow's) costs
    no second decode of the request.
    """
    try:
        resp, outs = decode_tensors(body, json_len, "outputs")
        n_out, outputs = _columns(outs, feature_names or {}, max_features)
    except CaptureError:
        return {}, None, True
    v = resp.get("model_version")
    version = v if isinstance(v, str) and v else None
    if outputs and n_out != n:
        return {}, version, True
    return outputs, version, False
