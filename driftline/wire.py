"""The wire format: a small versioned binary envelope carrying one or more window profiles.

Layout (all integers big-endian; see ``docs/wire-format.md`` for the full field list)::

    0   4  magic            b"DLNE"
    4   1  major version    2 (1 is still read: its numeric sketches hold float32 items)
    5   1  minor version    0 (readers ignore unknown keys added by newer minors)
    6   2  flags            bit 0: body is zlib-compressed (sent so when it saves a quarter)
    8  16  envelope id      UUID bytes; the service drops an id it has already merged
   24   4  body length      bytes that follow the header
   28   4  body CRC-32      of the body bytes as sent
   32   …  body             MessagePack map: producer, created_at, profiles

Every failure to decode raises :class:`~driftline.errors.WireFormatError` (or its subclass
:class:`~driftline.errors.UnsupportedVersionError`), never another exception.
"""

from __future__ import annotations

import functools
import struct
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from .columns import KLL_DOUBLES, KLL_FLOATS
from .conformance import check_conformance_entries
from .errors import DataFileError, DriftlineError, UnsupportedVersionError, WireFormatError
from .profile import WindowProfile
from .wirecheck import (
    INFLATE_FACTOR,
    MAX_ARRAY_LEN,
    MAX_DEPTH,
    MAX_MAP_LEN,
    MAX_STR_BYTES,
    check_body,
    max_depth_ok,
    object_budget,
    scan_msgpack,
)
from .wirefast import decode_common

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "COMPRESS_MIN_SAVING",
    "MAGIC",
    "PLAIN_MAX_BYTES",
    "READABLE_MAJORS",
    "Envelope",
    "decode_envelope",
    "decode_profile",
    "encode_envelope",
    "encode_profile",
    "read_profile_file",
    "write_profile_file",
]

MAGIC = b"DLNE"
FORMAT_MAJOR = 2
FORMAT_MINOR = 0
READABLE_MAJORS = (1, 2)
"""Majors this reader decodes. 2 changed numeric columns' ``kll`` from a KLL floats to a KLL doubles
sketch; a major-1 envelope's float sketches are widened to doubles on read, exactly."""
FLAG_ZLIB = 0x0001
KNOWN_FLAGS = FLAG_ZLIB
HEADER = struct.Struct(">4sBBH16sII")
DEFAULT_MAX_BYTES = 4 * 1024 * 1024


@dataclass
class Envelope:
    """A batch of window profiles from one producer, with an id for de-duplication."""

    profiles: list[WindowProfile]
    producer: dict[str, str] = field(default_factory=dict)
    envelope_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: float = field(default_factory=time.time)
    conformance: list[dict[str, Any]] = field(default_factory=list)
    """The device's newest golden-set results (optional body key ``conformance``, driftline/conformance.py)."""

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.profiles)


COMPRESS_MIN_SAVING = 0.25
"""The share of the body zlib must save for :func:`encode_envelope` to send it compressed by default.

Inflating costs the receiver CPU for every byte it yields; numeric columns' float64 sketches barely
compress (an envelope of 50 of them shrinks by about 14%), and inflating them was the service's
largest single cost per Kafka envelope (about 16%). Bodies that do compress well (categorical
sketches, reservoirs, long names) keep zlib. Readers have always accepted both (flag bit 0)."""
PLAIN_MAX_BYTES = 1 << 20
"""A body over this size is sent compressed whenever zlib saves anything: sent plain it could cross a
size limit (the service's 4 MiB ``max_body_bytes``, Kafka's ``max_request_size``) it fitted before."""


def encode_envelope(env: Envelope, *, compress: bool | None = None) -> bytes:
    """Encode an envelope to bytes (deterministic for equal inputs).

    ``compress``: True always sends the body zlib-compressed, False never; None (the default) sends
    it compressed only when that saves at least :data:`COMPRESS_MIN_SAVING` of its bytes, or any
    bytes of a body over :data:`PLAIN_MAX_BYTES`.
    """
    doc: dict[str, Any] = {
        "producer": dict(env.producer),
        "created_at": float(env.created_at),
        "profiles": [p.to_dict() for p in env.profiles],
    }
    if env.conformance:  # only when present: envelopes without it keep their bytes
        doc["conformance"] = [dict(e) for e in env.conformance]
    body = msgpack.packb(doc, use_bin_type=True)
    flags = 0
    if compress is not False:
        packed = zlib.compress(body, 1)
        if (compress or len(packed) <= len(body) * (1.0 - COMPRESS_MIN_SAVING)
                or (len(body) > PLAIN_MAX_BYTES and len(packed) < len(body))):
            body = packed
            flags |= FLAG_ZLIB
    header = HEADER.pack(
        MAGIC,
        FORMAT_MAJOR,
        FORMAT_MINOR,
        flags,
        uuid.UUID(env.envelope_id).bytes,
        len(body),
        zlib.crc32(body) & 0xFFFFFFFF,
    )
    return header + body


def decode_envelope(data: bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_BYTES,
                    instant_ok: bool = False, trusted: bool = False, lazy: bool = False) -> Envelope:
    """Decode and validate an envelope; raise :class:`WireFormatError` with a clear reason on any defect.

    Every bound of ``docs/wire-format.md`` is checked before the profiles are built, so any input
    under ``max_bytes`` costs little time and memory. ``instant_ok`` also admits profiles with
    ``start == end`` (reference profiles, which summarise a data set rather than a window).
    ``trusted`` skips the bounds (the frame, checksum and types are still checked): only for bytes
    this process's own side validated before storing them, such as the service's stored windows.
    ``lazy`` checks every numeric sketch as always but builds its object only on first use
    (:class:`~driftline.columns.NumericColumn`): for the service's ingest, which stores the bytes.
    """
    try:
        return _decode(bytes(data), max_bytes, instant_ok, trusted, lazy)
    except WireFormatError:
        raise
    except Exception as exc:  # any defect deeper in the body is still a wire-format defect
        raise WireFormatError(f"envelope body is malformed: {type(exc).__name__}: {exc}") from exc


def _decode(data: bytes, max_bytes: int, instant_ok: bool, trusted: bool = False, lazy: bool = False) -> Envelope:
    if len(data) > max_bytes:
        raise WireFormatError(f"envelope is {len(data)} bytes, over the {max_bytes}-byte limit")
    if not data:
        raise WireFormatError("empty envelope (0 bytes)")
    if len(data) < HEADER.size:
        if not MAGIC.startswith(data[:4]):
            raise WireFormatError("not a Driftline envelope (bad magic bytes)")
        raise WireFormatError(f"envelope truncated: {len(data)} bytes, the header alone is {HEADER.size}")
    magic, major, _minor, flags, raw_id, length, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireFormatError("not a Driftline envelope (bad magic bytes)")
    if major not in READABLE_MAJORS:
        raise UnsupportedVersionError(major, FORMAT_MAJOR)
    if flags & ~KNOWN_FLAGS:
        raise WireFormatError(f"envelope sets unknown flag bits 0x{flags & ~KNOWN_FLAGS:04x}")
    body = data[HEADER.size :]
    if len(body) != length:
        kind = "truncated" if len(body) < length else "has trailing bytes"
        raise WireFormatError(f"envelope {kind}: header says {length} body bytes, got {len(body)}")
    if zlib.crc32(body) & 0xFFFFFFFF != crc:
        raise WireFormatError("envelope body checksum mismatch (corrupted in transit?)")
    limit = max_bytes * INFLATE_FACTOR
    if flags & FLAG_ZLIB:
        d = zlib.decompressobj()
        body = d.decompress(body, limit)
        if d.unconsumed_tail or not d.eof:
            raise WireFormatError(f"compressed body is corrupt or inflates past {limit} bytes")
    envelope_id = str(uuid.UUID(bytes=raw_id))
    kll_items = KLL_FLOATS if major == 1 else KLL_DOUBLES
    lazy = lazy and not trusted
    reread = _Reread(body) if lazy else None
    if reread is not None and len(body) <= object_budget(max_bytes):  # the general path's fast-unpack size
        common = decode_common(body, kll_items, instant_ok=instant_ok, reread=reread.profile)
        if common is not None:
            profiles, producer, created_at = common
            return Envelope(profiles=profiles, producer=producer, envelope_id=envelope_id, created_at=created_at)
    if trusted:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=True)
        if not isinstance(obj, dict) or not isinstance(obj.get("profiles"), list):
            raise WireFormatError("envelope body has no 'profiles' list")
    else:
        obj = _unpack_checked(body, object_budget(max_bytes), limit)
        if not max_depth_ok(obj):
            raise WireFormatError(f"body nests containers deeper than {MAX_DEPTH} levels")
        check_body(obj, instant_ok=instant_ok)
    profiles = [_profile(p, i, kll_items, lazy, reread) for i, p in enumerate(obj["profiles"])]
    return Envelope(
        profiles=profiles,
        producer={k: str(v) for k, v in (obj.get("producer") or {}).items()},
        envelope_id=envelope_id,
        created_at=float(obj.get("created_at", 0.0)),
        conformance=check_conformance_entries(obj["conformance"]) if obj.get("conformance") is not None else [],
    )


_FAST_ARRAY_LEN = 1024
_FAST_MAP_LEN = 256


def _unpack_checked(body: bytes, budget: int, max_bin: int) -> Any:
    """Unpack an untrusted body with bounded memory.

    msgpack allocates each container for the length its header *claims* when it opens it, so a few
    bytes that open 1,000 nested 65,536-entry arrays would cost 500 MB; :func:`scan_msgpack` walks the
    bytes first to refuse that. The walk is pure Python, so small bodies skip it: a body of at most
    ``budget`` bytes holds at most ``budget`` objects, and unpacking it with small container limits
    (1,024 entries per array, 256 per map, msgpack's own 1,024-level stack) bounds what claimed
    lengths can allocate to about 20 MB. A body that breaks those limits, or any rule, is walked and
    unpacked the careful way, which names the defect.
    """
    if len(body) <= budget:
        try:
            return msgpack.unpackb(body, raw=False, strict_map_key=True, max_str_len=MAX_STR_BYTES,
                                   max_bin_len=max_bin, max_array_len=_FAST_ARRAY_LEN,
                                   max_map_len=_FAST_MAP_LEN, max_ext_len=0)
        except Exception:  # noqa: BLE001 - the careful path below says what is wrong
            pass
    scan_msgpack(body, budget, max_bin)  # before any object is built
    return msgpack.unpackb(body, raw=False, strict_map_key=True, max_str_len=MAX_STR_BYTES, max_bin_len=max_bin,
                           max_array_len=MAX_ARRAY_LEN, max_map_len=MAX_MAP_LEN, max_ext_len=0)


class _Reread:
    """A checked body read back on demand: the profiles of a lazily decoded envelope re-read their
    column maps from it (the first to ask unpacks it once for all), so none are kept meanwhile."""

    __slots__ = ("body", "profiles")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.profiles: list[Any] | None = None

    def profile(self, index: int) -> Any:
        if self.profiles is None:
            self.profiles = msgpack.unpackb(self.body, raw=False, strict_map_key=True)["profiles"]
        return self.profiles[index]


def _profile(raw: Any, index: int, kll_items: str, lazy: bool = False,
             reread: _Reread | None = None) -> WindowProfile:
    try:
        if reread is not None:
            return WindowProfile.from_dict(raw, kll_items, lazy=lazy, reread=functools.partial(reread.profile, index))
        return WindowProfile.from_dict(raw, kll_items, lazy=lazy)
    except (KeyError, TypeError, ValueError, DriftlineError) as exc:
        raise WireFormatError(f"profile #{index} is malformed: {type(exc).__name__}: {exc}") from exc


BLOB_ENVELOPE_ID = "00000000-0000-0000-0000-000000000000"
"""The id of a profile stored as a blob: it is never sent, so it carries no identity of its own."""


def encode_profile(profile: WindowProfile) -> bytes:
    """One profile as a blob (a stored window, a reference): an envelope with the zero id and time.

    The same bytes for equal profiles, so a blob compares and de-duplicates by content.
    """
    return encode_envelope(Envelope([profile], envelope_id=BLOB_ENVELOPE_ID, created_at=0.0))


def decode_profile(data: bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_BYTES,
                   trusted: bool = False, instant_ok: bool = False) -> WindowProfile:
    """The one profile of an envelope (a blob of :func:`encode_profile`, a spool file).

    Raises :class:`WireFormatError` like :func:`decode_envelope`, and when the envelope does not hold
    exactly one profile. ``trusted`` as in :func:`decode_envelope` (bytes this side wrote itself).
    """
    env = decode_envelope(data, max_bytes=max_bytes, trusted=trusted, instant_ok=instant_ok)
    if len(env.profiles) != 1:
        raise WireFormatError(f"expected one profile, the envelope holds {len(env.profiles)}")
    return env.profiles[0]


def write_profile_file(path: str | Path, profile: WindowProfile, producer: Mapping[str, str] | None = None) -> int:
    """Write one profile as an envelope file (the same bytes the service accepts); returns its size."""
    data = encode_envelope(Envelope([profile], producer=dict(producer or {"name": "driftline-cli"})))
    Path(path).write_bytes(data)
    return len(data)


def read_profile_file(path: str | Path, *, max_bytes: int = 256 * 1024 * 1024) -> WindowProfile:
    """Read a profile file; several profiles in one file are merged."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DataFileError(f"cannot read {p}: {exc.strerror or exc}") from exc
    try:
        env = decode_envelope(data, max_bytes=max_bytes, instant_ok=True)
    except WireFormatError as exc:
        raise DataFileError(f"{p} is not a Driftline profile file: {exc}") from exc
    if not env.profiles:
        raise DataFileError(f"{p} holds no profile")
    from .profile import merge_all

    return merge_all(env.profiles) if len(env.profiles) > 1 else env.profiles[0]
