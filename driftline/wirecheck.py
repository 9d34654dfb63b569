"""Bounds of the wire format, checked before and after MessagePack builds any object.

A hostile body must cost the receiver little: :func:`scan_msgpack` walks the MessagePack bytes
without building objects and refuses nesting deeper than :data:`MAX_DEPTH`, more than an
envelope's object budget, long containers, strings and binaries, and extension types; only then
does ``msgpack`` build objects (with the same ``max_*_len`` limits as a second fence).
:func:`check_body` then checks every field of the built body against ``docs/wire-format.md``:
types, counts in ``[0, MAX_COUNT]``, finite windows with ``start < end``, per-column count
invariants, name lengths and characters, and the size the sketches will allocate.

Every refusal is a :class:`~driftline.errors.WireFormatError` whose message names the field.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping
from typing import Any

from .errors import WireFormatError
from .pairing import COUNT_KEYS

__all__ = [
    "INFLATE_FACTOR",
    "MAX_ARRAY_LEN",
    "MAX_COHORT_LABELS",
    "MAX_COLUMNS",
    "MAX_COUNT",
    "MAX_DEPTH",
    "MAX_MAP_LEN",
    "MAX_NAME_CHARS",
    "MAX_PRODUCER_ENTRIES",
    "MAX_PRODUCER_VALUE_CHARS",
    "MAX_RECONSTRUCTION_MODEL_BYTES",
    "MAX_PROFILES",
    "MAX_RESERVOIR",
    "MAX_STR_BYTES",
    "MAX_VERDICT_NAMES",
    "SKETCH_SLOT_BUDGET",
    "check_body",
    "check_name",
    "has_control_chars",
    "max_depth_ok",
    "name_ok",
    "object_budget",
    "scan_msgpack",
]

MAX_COUNT = 2**48
"""Largest row or value count one profile may carry (2.8e14): sums of many stay far below 2**63."""
INFLATE_FACTOR = 4
"""A compressed body may inflate to at most this many times the envelope size limit."""
MAX_DEPTH = 16
"""Deepest container nesting (the format itself needs 6)."""
MAX_ARRAY_LEN = 65536
MAX_MAP_LEN = 8192
MAX_STR_BYTES = 65536
MAX_PROFILES = 4096
MAX_COLUMNS = 4096
"""Columns per ``features`` or ``outputs`` map."""
MAX_NAME_CHARS = 256
MAX_COHORT_LABELS = 32
MAX_PRODUCER_ENTRIES = 64
MAX_PRODUCER_VALUE_CHARS = 1024
MAX_RESERVOIR = 65536
MAX_DISTINCT_K = 4096
"""Largest distinct sample a categorical column may carry (the default is 256)."""
MAX_VERDICT_NAMES = 16
"""Drifted feature names a window's device verdict may list."""
MAX_VERDICT_ENTRIES = 16
VERDICT_STATUSES = ("ok", "drift", "insufficient_data")
MAX_RECONSTRUCTION_MODEL_BYTES = 3 * 1024 * 1024
"""Largest reconstruction model a reference may carry (512 features, all components: about 2 MiB)."""
SKETCH_SLOT_BUDGET = 2**23
"""Slots the categorical sketches of one envelope may ask for in all: 2**lg_cur per frequent-items
sketch (allocated when it is read) plus 2**lg_k per HLL sketch (allocated when it is merged)."""
KINDS = {"numeric": ("count", "missing", "nan", "inf", "invalid", "absent"),
         "categorical": ("count", "missing", "invalid", "absent")}

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# MessagePack first bytes: fixed extra bytes after the type byte for scalars (-1: not a scalar).
_FIXED = [-1] * 256
for _b in [*range(0x00, 0x80), *range(0xE0, 0x100), 0xC0, 0xC2, 0xC3, 0x80, 0x90]:  # ints, nil, bools, {}, []
    _FIXED[_b] = 0
for _b in range(0xA0, 0xC0):  # fixstr
    _FIXED[_b] = _b & 0x1F
for _b, _n in ((0xCA, 4), (0xCB, 8), (0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8), (0xD0, 1), (0xD1, 2),
               (0xD2, 4), (0xD3, 8)):
    _FIXED[_b] = _n


def object_budget(limit_bytes: int) -> int:
    """How many MessagePack objects an envelope under ``limit_bytes`` may hold (one per 16 bytes)."""
    return max(65536, limit_bytes // 16)


def max_depth_ok(obj: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether built containers nest at most ``limit`` levels (what :func:`scan_msgpack` enforces on
    the bytes); walks containers only, so a body of blobs and scalars costs little.

    A numeric column's map inside a profile's ``features`` or ``outputs`` (most of a body) is not
    walked when it holds exactly the numeric column's keys: :func:`check_body` checks each of those
    values as a scalar or a binary, so a container under one of them is refused there.
    """
    if type(obj) not in (dict, list) or not obj:
        return True
    # (a non-empty container, its level, its place: 1 the body, 2 its profiles, 3 a profile,
    # 4 a profile's column map, 0 anywhere else); the scan counts non-empty containers only
    stack = [(obj, 1, 1)]
    while stack:
        node, level, place = stack.pop()
        for key, child in (node.items() if type(node) is dict else enumerate(node)):
            if type(child) in (dict, list) and child:
                if level + 1 > limit:
                    return False
                if place == 4 and type(child) is dict and child.keys() == _NUMERIC_KEYS:
                    continue
                sub = 0
                if place == 1 and key == "profiles" and type(node) is dict:
                    sub = 2
                elif place == 2:
                    sub = 3
                elif place == 3 and key in ("features", "outputs") and type(node) is dict:
                    sub = 4
                stack.append((child, level + 1, sub))
    return True


_NUMERIC_KEYS = frozenset(("kind", "count", "missing", "nan", "inf", "invalid", "absent", "min", "max", "sum",
                           "sumsq", "kll"))


def scan_msgpack(buf: bytes, max_objects: int, max_bin: int) -> None:
    """Walk one MessagePack object in ``buf`` without building it; raise on anything over the bounds.

    Every container's elements are read from the bytes that are really there, so a header that
    claims 2**32 elements costs nothing: the walk ends at the first missing byte.
    """
    n = len(buf)
    pos = 0
    stack: list[int] = []
    remaining = 1
    objects = 0
    fixed = _FIXED
    while True:
        while remaining == 0:
            if not stack:
                if pos > n:
                    raise WireFormatError("body MessagePack is truncated")
                if pos < n:
                    raise WireFormatError(f"body has {n - pos} bytes after its MessagePack map")
                return
            remaining = stack.pop()
        if pos >= n:
            raise WireFormatError("body MessagePack is truncated")
        b = buf[pos]
        remaining -= 1
        objects += 1
        if objects > max_objects:
            raise WireFormatError(f"body has more than {max_objects} MessagePack objects")
        extra = fixed[b]
        if extra >= 0:
            pos += 1 + extra
            continue
        if 0x80 <= b <= 0x9F:
            count, pos = b & 0x0F, pos + 1
            is_map = b < 0x90
        elif b in (0xD9, 0xDA, 0xDB, 0xC4, 0xC5, 0xC6):
            width = {0xD9: 1, 0xDA: 2, 0xDB: 4, 0xC4: 1, 0xC5: 2, 0xC6: 4}[b]
            size = int.from_bytes(buf[pos + 1 : pos + 1 + width], "big")
            limit = MAX_STR_BYTES if b >= 0xD9 else max_bin
            if size > limit:
                kind = "string" if b >= 0xD9 else "binary"
                raise WireFormatError(f"body has a {size}-byte {kind}, over the {limit}-byte limit")
            pos += 1 + width + size
            continue
        elif b in (0xDC, 0xDD, 0xDE, 0xDF):
            width = 2 if b in (0xDC, 0xDE) else 4
            if pos + 1 + width > n:
                raise WireFormatError("body MessagePack is truncated")
            count = int.from_bytes(buf[pos + 1 : pos + 1 + width], "big")
            pos += 1 + width
            is_map = b >= 0xDE
        elif b == 0xC1:
            raise WireFormatError("body is not valid MessagePack (byte 0xc1)")
        else:
            raise WireFormatError("body uses a MessagePack extension type, which the format does not allow")
        if count > (MAX_MAP_LEN if is_map else MAX_ARRAY_LEN):
            kind = "map" if is_map else "array"
            raise WireFormatError(f"body has a {count}-entry {kind}, over the "
                                  f"{MAX_MAP_LEN if is_map else MAX_ARRAY_LEN}-entry limit")
        if count:
            if len(stack) >= MAX_DEPTH:
                raise WireFormatError(f"body nests containers deeper than {MAX_DEPTH} levels")
            stack.append(remaining)
            remaining = count * 2 if is_map else count


# ---- the built body -------------------------------------------------------------------------------
def has_control_chars(text: str) -> bool:
    """Whether ``text`` holds a character no name may hold; one call checks many names joined by spaces."""
    return _CONTROL.search(text) is not None


def name_ok(value: str, limit: int = MAX_NAME_CHARS) -> bool:
    """Whether ``value`` is a name the wire format admits (producers drop or refuse other names)."""
    return 0 < len(value) <= limit and not _CONTROL.search(value)


def check_name(value: Any, what: str, *, empty: bool = True, limit: int = MAX_NAME_CHARS) -> str:
    """A name (model, version, column, cohort label...): a str of at most ``limit`` characters, no
    control characters; why: names become SQL values, URL segments and metric labels."""
    if not isinstance(value, str):
        raise WireFormatError(f"{what} is {type(value).__name__}, expected a string")
    if not value and not empty:
        raise WireFormatError(f"{what} is empty")
    if len(value) > limit:
        raise WireFormatError(f"{what} is {len(value)} characters, over the {limit}-character limit")
    if _CONTROL.search(value):
        raise WireFormatError(f"{what} {value[:40]!r} contains control characters")
    return value


def _count(d: Mapping[str, Any], key: str, what: str, limit: int = MAX_COUNT) -> int:
    v = d.get(key)
    if type(v) is not int:
        raise WireFormatError(f"{what}.{key} is {type(v).__name__}, expected an integer")
    if not 0 <= v <= limit:
        raise WireFormatError(f"{what}.{key} = {v} is outside [0, {limit}]")
    return v


def _float(d: Mapping[str, Any], key: str, what: str, *, finite: bool = True, optional: bool = False) -> None:
    v = d.get(key)
    if v is None and optional:
        return
    if type(v) not in (float, int):
        raise WireFormatError(f"{what}.{key} is {type(v).__name__}, expected a number")
    if finite and not math.isfinite(v):
        raise WireFormatError(f"{what}.{key} = {v} is not finite")


def _map(v: Any, what: str, limit: int | None = None) -> Mapping[str, Any]:
    if not isinstance(v, dict):
        raise WireFormatError(f"{what} is {type(v).__name__}, expected a map")
    if limit is not None and len(v) > limit:
        raise WireFormatError(f"{what} has {len(v)} entries, over the {limit}-entry limit")
    return v


def _list(v: Any, what: str, limit: int) -> list[Any]:
    if not isinstance(v, list):
        raise WireFormatError(f"{what} is {type(v).__name__}, expected an array")
    if len(v) > limit:
        raise WireFormatError(f"{what} has {len(v)} entries, over the {limit}-entry limit")
    return v


def _bin(d: Mapping[str, Any], key: str, what: str) -> bytes:
    v = d.get(key)
    if not isinstance(v, bytes):
        raise WireFormatError(f"{what}.{key} is {type(v).__name__}, expected binary")
    return v


def check_body(obj: Any, *, instant_ok: bool = False) -> None:
    """Check a decoded body against the wire spec; ``instant_ok`` admits ``start == end`` (references)."""
    body = _map(obj, "envelope body")
    producer = _map(body.get("producer", {}) or {}, "producer", MAX_PRODUCER_ENTRIES)
    for k, v in producer.items():
        check_name(k, "producer key", empty=False, limit=64)
        if isinstance(v, str):
            check_name(v, f"producer[{k!r}]", limit=MAX_PRODUCER_VALUE_CHARS)
        elif type(v) not in (int, float, bool):
            raise WireFormatError(f"producer[{k!r}] is {type(v).__name__}, expected a string")
    if "created_at" in body:
        _float(body, "created_at", "envelope")
    profiles = _list(body.get("profiles"), "envelope 'profiles'", MAX_PROFILES)
    slots = 0
    for i, p in enumerate(profiles):
        slots += _check_profile(_map(p, f"profile #{i}"), f"profile #{i}", instant_ok)
        if slots > SKETCH_SLOT_BUDGET:
            raise WireFormatError(f"categorical sketches ask for more than {SKETCH_SLOT_BUDGET} slots in all")


def _check_profile(p: Mapping[str, Any], what: str, instant_ok: bool) -> int:
    check_name(p.get("model"), f"{what} model", empty=False)
    for key in ("model_version", "variant", "source"):
        check_name(p.get(key), f"{what} {key}")
    cohort = _list(p.get("cohort", []), f"{what} cohort", MAX_COHORT_LABELS)
    for pair in cohort:
        if not isinstance(pair, list) or len(pair) != 2:
            raise WireFormatError(f"{what} cohort entry is not a [label, value] pair")
        check_name(pair[0], f"{what} cohort label", empty=False)
        check_name(pair[1], f"{what} cohort value")
    _float(p, "start", what)
    _float(p, "end", what)
    if not (p["start"] < p["end"] or (instant_ok and p["start"] == p["end"])):
        raise WireFormatError(f"{what} window [{p['start']}, {p['end']}) does not end after it starts")
    rows = _count(p, "rows", what)
    profiled = _count(p, "rows_profiled", what)
    if profiled > rows:
        raise WireFormatError(f"{what} has rows_profiled {profiled} > rows {rows}")
    cfg = _map(p.get("config", {}) or {}, f"{what} config")
    for key in ("kll_k", "fi_lg_max_k", "hll_lg_k", "reservoir_size"):
        if key in cfg:
            _count(cfg, key, f"{what} config", MAX_RESERVOIR)
    for key in ("categorical", "numeric"):
        for name in _list(cfg.get(key, []), f"{what} config.{key}", MAX_COLUMNS):
            check_name(name, f"{what} config.{key} entry")
    slots = 0
    for group in ("features", "outputs"):
        cols = _map(p.get(group), f"{what} {group}", MAX_COLUMNS)
        clean = _names_clean(cols)
        for name, col in cols.items():
            # the common case checked without building a message; anything odd is explained by the
            # precise checks below, which raise the same errors they always did
            if clean or (type(name) is str and 0 < len(name) <= MAX_NAME_CHARS and not _CONTROL.search(name)):
                fast = _column_slots_fast(col, profiled)
                if fast is not None:
                    slots += fast
                    continue
            check_name(name, f"{what} {group} name", empty=False)
            slots += _check_column(_map(col, f"{what} {group}[{name!r}]"), f"{what} {group}[{name!r}]",
                                   profiled)
    if p.get("runtime") is not None:
        rt = _map(p["runtime"], f"{what} runtime")
        _bin(rt, "latency_ms", f"{what} runtime")
        _count(rt, "errors", f"{what} runtime")
        _count(rt, "rss_bytes", f"{what} runtime", 2**62)
        _float(rt, "cpu_seconds", f"{what} runtime")
        if rt["cpu_seconds"] < 0:
            raise WireFormatError(f"{what} runtime.cpu_seconds is negative")
    if p.get("reservoir") is not None:
        _check_reservoir(_map(p["reservoir"], f"{what} reservoir"), f"{what} reservoir")
    if p.get("verdict") is not None:
        _check_verdict(_map(p["verdict"], f"{what} verdict", MAX_VERDICT_ENTRIES), f"{what} verdict")
    if p.get("performance") is not None:
        _check_performance(_map(p["performance"], f"{what} performance", 32), f"{what} performance")
    if p.get("calibration") is not None:
        _check_calibration(_map(p["calibration"], f"{what} calibration", MAX_CALIBRATION_ENTRIES),
                           f"{what} calibration")
    if p.get("reconstruction") is not None:
        _check_reconstruction(_map(p["reconstruction"], f"{what} reconstruction", 8), f"{what} reconstruction", profiled)
    if p.get("shadow") is not None:
        _check_shadow(_map(p["shadow"], f"{what} shadow", MAX_SHADOW_ENTRIES), f"{what} shadow")
    return slots


def _names_clean(cols: Mapping[Any, Any]) -> bool:
    """Whether every key is a string of 1 to MAX_NAME_CHARS characters with no control character, in a
    few C calls for the whole map (a separator that is not a control character cannot make a match)."""
    if not cols:
        return True
    try:
        joined = " ".join(cols)
    except TypeError:  # a key that is not a string: the precise checks name it
        return False
    return (type(next(iter(cols))) is str and min(map(len, cols)) > 0 and max(map(len, cols)) <= MAX_NAME_CHARS
            and not _CONTROL.search(joined))


_numeric_values = operator.itemgetter("kind", "kll", "count", "missing", "nan", "inf", "invalid", "absent", "min",
                                      "max", "sum", "sumsq")


def _column_slots_fast(col: Any, profiled: int) -> int | None:
    """0 for a numeric column that passes every check of :func:`_check_column`; None when it may
    not (then the precise checks run and say why). Categorical columns always take the precise path.

    Most of an envelope is numeric column maps, so this is written for CPython: one ``itemgetter``
    call for the twelve values, chained identity tests for the types. The counts need no upper bound
    here: each is ``>= 0`` and they add up to ``profiled``, which the caller has bounded.
    """
    if type(col) is not dict:
        return None
    try:
        kind, kll, count, missing, nan, inf, invalid, absent, vmin, vmax, vsum, vsumsq = _numeric_values(col)
    except KeyError:
        return None
    # (a | b) < 0 exactly when a < 0 or b < 0, for ints; a float is finite when v - v == 0.0
    if (kind != "numeric" or type(kll) is not bytes
            or not type(count) is type(missing) is type(nan) is type(inf) is type(invalid) is type(absent) is int
            or (count | missing | nan | inf | invalid | absent) < 0
            or count + missing + nan + inf + invalid + absent != profiled
            or type(vsum) not in _NUMBER or type(vsumsq) not in _NUMBER
            or (vmin is not None and type(vmin) is not int and (type(vmin) is not float or vmin - vmin != 0.0))
            or (vmax is not None and type(vmax) is not int and (type(vmax) is not float or vmax - vmax != 0.0))):
        return None
    return 0


_NUMBER = (float, int)


def _check_verdict(v: Mapping[str, Any], what: str) -> None:
    """The optional device verdict: small, typed, bounded (unknown keys are allowed and dropped)."""
    if type(v.get("dataset_drift")) is not bool:
        raise WireFormatError(f"{what}.dataset_drift must be a boolean")
    _float(v, "drift_share", what)
    if not 0.0 <= v["drift_share"] <= 1.0:
        raise WireFormatError(f"{what}.drift_share {v['drift_share']} is outside [0, 1]")
    _float(v, "evaluated_at", what)
    if v.get("status") not in VERDICT_STATUSES:
        raise WireFormatError(f"{what}.status must be one of {', '.join(VERDICT_STATUSES)}")
    for name in _list(v.get("drifted", []), f"{what}.drifted", MAX_VERDICT_NAMES):
        check_name(name, f"{what}.drifted entry", empty=False)
    if v.get("reference") is not None:
        check_name(v["reference"], f"{what}.reference", limit=128)


def _check_column(col: Mapping[str, Any], what: str, profiled: int) -> int:
    kind = col.get("kind")
    if kind not in KINDS:
        raise WireFormatError(f"{what} has unknown kind {kind!r}")
    total = sum(_count(col, key, what) for key in KINDS[kind])
    if total != profiled:
        raise WireFormatError(f"{what} counts add up to {total}, not rows_profiled {profiled}")
    if kind == "numeric":
        _bin(col, "kll", what)
        for key in ("min", "max"):
            _float(col, key, what, optional=True)
        for key in ("sum", "sumsq"):
            _float(col, key, what, finite=False)  # sums of huge finite values may overflow to inf
        return 0
    hll = _bin(col, "hll", what)
    fi = _bin(col, "fi", what)
    if "ds" in col:
        _check_distinct_sample(col["ds"], what, int(col["count"]))
    if len(fi) < 8 or len(hll) < 8:
        return 0  # too short to be a sketch: deserializing it fails cleanly
    # Preambles (DataSketches): frequent items byte 3 = lg_max_map_size, byte 4 = lg_cur_map_size;
    # HLL byte 3 = lg_config_k.
    if fi[3] > 24 or fi[4] > fi[3]:
        raise WireFormatError(f"{what} frequent-items sketch asks for 2**{fi[4]} slots (lg_max {fi[3]})")
    if not 4 <= hll[3] <= 21:
        raise WireFormatError(f"{what} HLL sketch has lg_k {hll[3]}, outside [4, 21]")
    return int(2 ** fi[4] + 2 ** hll[3])


def _check_distinct_sample(raw: Any, what: str, count: int) -> None:
    """A categorical column's distinct sample (driftline/distinct.py): k, threshold, (label, count) pairs."""
    ds = _map(raw, f"{what} distinct sample")
    k = _count(ds, "k", f"{what} distinct sample", MAX_DISTINCT_K)
    if k < 1:
        raise WireFormatError(f"{what} distinct sample has k = 0")
    threshold = ds.get("threshold")
    if not isinstance(threshold, int) or isinstance(threshold, bool) or not 0 <= threshold < 2**64:
        raise WireFormatError(f"{what} distinct sample threshold is not a 64-bit unsigned integer")
    items = _list(ds.get("items"), f"{what} distinct sample items", k)
    total = 0
    for item in items:
        if (not isinstance(item, list | tuple) or len(item) != 2 or not isinstance(item[0], str)
                or not isinstance(item[1], int) or isinstance(item[1], bool) or not 0 < item[1] <= MAX_COUNT):
            raise WireFormatError(f"{what} distinct sample items must be [label, count > 0] pairs")
        total += item[1]
    if total > count:
        raise WireFormatError(f"{what} distinct sample counts {total} rows, more than the column's {count}")


def _check_reservoir(r: Mapping[str, Any], what: str) -> None:
    capacity = _count(r, "capacity", what, MAX_RESERVOIR)
    seen = _count(r, "seen", what)
    rows = _list(r.get("rows"), f"{what} rows", capacity)
    if len(rows) > seen:
        raise WireFormatError(f"{what} holds {len(rows)} rows but has seen {seen}")
    for row in rows:
        for k, v in _map(row, f"{what} row", MAX_MAP_LEN).items():
            check_name(k, f"{what} row key", empty=False, limit=MAX_NAME_CHARS + 7)  # "output:" prefix
            if v is not None and type(v) not in (str, int, float, bool):
                raise WireFormatError(f"{what} row value for {k!r} is {type(v).__name__}, expected a scalar")


def _check_performance(v: Mapping[str, Any], what: str) -> None:
    """The optional summary of delayed labels (``driftline.performance``): bounded before it is built;
    its consistency (sketch counts against confusion counts, bin sums) is checked as it is rebuilt."""
    from .performance import MAX_BINS, TASKS

    if v.get("task") not in TASKS:
        raise WireFormatError(f"{what}.task must be one of {', '.join(TASKS)}")
    _float(v, "threshold", what)
    for key in ("cal_n", "cal_score", "cal_pos"):
        if key in v and (not isinstance(v[key], list) or not 1 <= len(v[key]) <= MAX_BINS):
            raise WireFormatError(f"{what}.{key} must be a list of 1 to {MAX_BINS} numbers")
    for key in ("tp", "fp", "tn", "fn", "n", "k"):
        if key in v:
            _count(v, key, what)
    for key in ("pos", "neg"):
        if key in v and not isinstance(v[key], bytes):
            raise WireFormatError(f"{what}.{key} must be binary (a KLL sketch)")


MAX_CALIBRATION_ENTRIES = 16
MAX_CALIBRATION_KNOTS = 256


def _check_calibration(c: Mapping[str, Any], what: str) -> None:
    """A reference's optional score calibration (driftline/estimate.py): bounded arrays of plain
    numbers, then the map's own rules (monotone, probabilities in [0, 1], consistent pools)."""
    for key in ("x", "p", "block", "block_rows", "block_pos"):
        for v in _list(c.get(key), f"{what}.{key}", MAX_CALIBRATION_KNOTS):
            if type(v) not in (int, float) or not math.isfinite(v):
                raise WireFormatError(f"{what}.{key} holds {v!r}, expected finite numbers")
    for key in ("block", "block_rows", "block_pos"):
        if any(type(v) is not int for v in c[key]):
            raise WireFormatError(f"{what}.{key} must hold integers")
    check_name(c.get("output"), f"{what}.output", empty=False)
    check_name(c.get("label", ""), f"{what}.label")
    check_name(c.get("positive", "1"), f"{what}.positive")
    _float(c, "threshold", what)
    _count(c, "rows", what)
    from .estimate import Calibration, EstimateError

    try:
        Calibration.from_dict(c)
    except EstimateError as exc:
        raise WireFormatError(f"{what}: {exc}") from None


def _check_reconstruction(r: Mapping[str, Any], what: str, profiled: int) -> None:
    """The optional reconstruction-error sketch (driftline/reconstruction.py): a digest, one numeric
    column of at most ``rows_profiled`` errors (rows folded before the model was known have none),
    and on a reference the model's bytes (bounded)."""
    check_name(r.get("digest"), f"{what}.digest", empty=False, limit=64)
    col = _map(r.get("error"), f"{what}.error")
    if col.get("kind") != "numeric":
        raise WireFormatError(f"{what}.error must be a numeric column")
    total = sum(_count(col, key, f"{what}.error") for key in KINDS["numeric"])
    if total > profiled:
        raise WireFormatError(f"{what}.error counts {total} rows, more than rows_profiled {profiled}")
    _check_column(col, f"{what}.error", total)
    if r.get("model") is not None and len(_bin(r, "model", what)) > MAX_RECONSTRUCTION_MODEL_BYTES:
        raise WireFormatError(f"{what}.model is over {MAX_RECONSTRUCTION_MODEL_BYTES} bytes")


MAX_SHADOW_ENTRIES = 32


def _check_shadow(v: Mapping[str, Any], what: str) -> None:
    """The optional paired shadow summary (driftline/pairing.py): counts, finite moments, consistent cells."""
    for key in COUNT_KEYS:
        if key in v:
            _count(v, key, what)
    for key in ("score_mean", "score_m2"):
        if key in v:
            _float(v, key, what)
    c = {k: int(v.get(k, 0)) for k in COUNT_KEYS}
    if float(v.get("score_m2", 0.0)) < 0:
        raise WireFormatError(f"{what}.score_m2 is negative")
    for small, big in (("agree", "labelled"), ("live_only_errors", "live_errors"),
                       ("shadow_only_errors", "shadow_errors"), ("live_errors", "requests"),
                       ("shadow_errors", "requests")):
        if c[small] > c[big]:
            raise WireFormatError(f"{what}.{small} {c[small]} exceeds {big} {c[big]}")
