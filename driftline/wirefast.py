"""The common envelope, decoded and checked in one pass in C: the service's ingest fast path.

Almost every envelope a fleet sends has the same shape: windows of numeric columns, perhaps serving
stats, a producer map, nothing else. :func:`decode_common` reads exactly that shape with msgspec's
typed MessagePack decoder, which checks the types and bounds of ``docs/wire-format.md`` while it
reads, builds no dict per column, and decodes each repeated key once; what is left (counts that add
up, names without control characters, windows that end after they start, sketches that deserialize)
is a few passes over the decoded values. The profiles come back lazy: their column maps are re-read
from the body when first used (:class:`~driftline.profile.WindowProfile`).

It admits a strict subset of what the general path (:func:`~driftline.wirecheck.check_body`)
admits, field by field: every schema here is closed (``forbid_unknown_fields``), every bound is the
general path's, and a body over the general path's fast-unpack size goes there. So it never accepts
what the general path would refuse, and anything it does not take (any other field, a categorical
column, any defect) returns None, and the general path decides, with its precise messages.
msgspec is in the ``service`` extra; without it :data:`AVAILABLE` is false and every envelope takes
the general path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, Literal

from .profile import WindowProfile, check_numeric_sketches
from .wirecheck import (
    MAX_COHORT_LABELS,
    MAX_COLUMNS,
    MAX_COUNT,
    MAX_NAME_CHARS,
    MAX_PRODUCER_ENTRIES,
    MAX_PRODUCER_VALUE_CHARS,
    MAX_PROFILES,
    MAX_RESERVOIR,
    has_control_chars,
)

__all__ = ["AVAILABLE", "decode_common"]

try:
    import msgspec
    from msgspec import Meta, Struct
except ImportError:  # the sidecar extra: the general path alone
    AVAILABLE = False
else:
    AVAILABLE = True

if AVAILABLE:
    _LARGEST = 1.7976931348623157e308
    Count = Annotated[int, Meta(ge=0, le=MAX_COUNT)]
    Finite = Annotated[float, Meta(ge=-_LARGEST, le=_LARGEST)]  # NaN fails both bounds
    Name = Annotated[str, Meta(max_length=MAX_NAME_CHARS)]
    Named = Annotated[str, Meta(min_length=1, max_length=MAX_NAME_CHARS)]
    Small = Annotated[int, Meta(ge=0, le=MAX_RESERVOIR)]

    class _Numeric(Struct, forbid_unknown_fields=True):
        """A numeric column with every one of its twelve fields (the general path's fast check)."""

        kind: Literal["numeric"]
        count: int
        missing: int
        nan: int
        inf: int
        invalid: int
        absent: int
        min: Finite | None
        max: Finite | None
        sum: float
        sumsq: float
        kll: bytes

    Columns = Annotated[dict[Named, _Numeric], Meta(max_length=MAX_COLUMNS)]

    class _Config(Struct, forbid_unknown_fields=True):
        # UNSET, not None: the general path refuses a size given as nil, so this refuses it too
        kll_k: Small | msgspec.UnsetType = msgspec.UNSET
        fi_lg_max_k: Small | msgspec.UnsetType = msgspec.UNSET
        hll_lg_k: Small | msgspec.UnsetType = msgspec.UNSET
        reservoir_size: Small | msgspec.UnsetType = msgspec.UNSET
        categorical: Annotated[list[Name], Meta(max_length=MAX_COLUMNS)] = []
        numeric: Annotated[list[Name], Meta(max_length=MAX_COLUMNS)] = []

    class _Runtime(Struct, forbid_unknown_fields=True):
        latency_ms: bytes
        errors: Count
        rss_bytes: Annotated[int, Meta(ge=0, le=2**62)]
        cpu_seconds: Annotated[float, Meta(ge=0, le=_LARGEST)]

    class _Profile(Struct, forbid_unknown_fields=True):
        model: Named
        model_version: Name
        variant: Name
        source: Name
        start: Finite
        end: Finite
        rows: Count
        rows_profiled: Count
        features: Columns
        outputs: Columns
        cohort: Annotated[list[tuple[Named, Name]], Meta(max_length=MAX_COHORT_LABELS)] = []
        config: _Config | None = None
        runtime: _Runtime | None = None

    ProducerKey = Annotated[str, Meta(min_length=1, max_length=64)]
    ProducerValue = Annotated[str, Meta(max_length=MAX_PRODUCER_VALUE_CHARS)] | int | float | bool

    class _Body(Struct, forbid_unknown_fields=True):
        profiles: Annotated[list[_Profile], Meta(max_length=MAX_PROFILES)]
        producer: Annotated[dict[ProducerKey, ProducerValue], Meta(max_length=MAX_PRODUCER_ENTRIES)] | None = None
        created_at: Finite = 0.0

    _DECODER = msgspec.msgpack.Decoder(_Body)


def decode_common(body: bytes, kll_items: str, *, reread: Callable[[int], Any], instant_ok: bool = False
                  ) -> tuple[list[WindowProfile], dict[str, str], float] | None:
    """The profiles, producer and creation time of a body of the common shape, or None if it is not one.

    ``reread(i)`` returns profile ``i``'s dict from the body (the general path's unpack, trusted):
    the lazy profiles call it when their columns are first read. Never raises for a bad body: None
    sends it down the general path, which refuses it with the reason.
    """
    if not AVAILABLE:
        return None
    try:
        obj = _DECODER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    names: list[str] = []
    sketches: list[bytes] = []
    for p in obj.profiles:
        if not (p.start < p.end or (instant_ok and p.start == p.end)) or p.rows_profiled > p.rows:
            return None
        n = p.rows_profiled
        for group in (p.features, p.outputs):
            for c in group.values():
                # each count is >= 0 exactly when their bitwise or is (ints); together they are n
                if (c.count | c.missing | c.nan | c.inf | c.invalid | c.absent) < 0 or \
                        c.count + c.missing + c.nan + c.inf + c.invalid + c.absent != n:
                    return None
                sketches.append(c.kll)
            names.extend(group)
        names += (p.model, p.model_version, p.variant, p.source)
        for label, value in p.cohort:
            names += (label, value)
        if p.config is not None:
            names += p.config.categorical
            names += p.config.numeric
    producer = obj.producer or {}
    names.extend(producer)
    names.extend(v for v in producer.values() if type(v) is str)
    if has_control_chars(" ".join(names)):
        return None
    try:
        check_numeric_sketches(sketches, kll_items)
    except Exception:  # noqa: BLE001 - the general path names the bad sketch
        return None
    profiles = []
    for i, p in enumerate(obj.profiles):
        d: dict[str, Any] = {"model": p.model, "model_version": p.model_version, "variant": p.variant,
                             "source": p.source, "cohort": p.cohort, "start": p.start, "end": p.end,
                             "rows": p.rows, "rows_profiled": p.rows_profiled}
        if p.config is not None:
            d["config"] = {k: v for k in _CONFIG_FIELDS if (v := getattr(p.config, k)) is not msgspec.UNSET}
        if p.runtime is not None:
            rt = p.runtime
            d["runtime"] = {"latency_ms": rt.latency_ms, "errors": rt.errors, "cpu_seconds": rt.cpu_seconds,
                            "rss_bytes": rt.rss_bytes}
        try:
            profiles.append(WindowProfile.from_dict(
                d, kll_items, lazy=True, reread=functools.partial(reread, i),
                numeric_names=(tuple(p.features), tuple(p.outputs))))
        except Exception:  # noqa: BLE001 - a runtime sketch that does not deserialize, named by the general path
            return None
    return profiles, {k: str(v) for k, v in producer.items()}, float(obj.created_at)


_CONFIG_FIELDS = ("kll_k", "fi_lg_max_k", "hll_lg_k", "reservoir_size", "categorical", "numeric")
