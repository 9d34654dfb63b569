"""The decoder enforces every bound of docs/wire-format.md, before building objects where it matters."""

from __future__ import annotations

import tracemalloc
import uuid
import zlib

import msgpack
import pytest

from driftline.errors import WireFormatError
from driftline.wire import HEADER, MAGIC, Envelope, decode_envelope, encode_envelope
from driftline.wirecheck import MAX_COUNT, MAX_DEPTH, SKETCH_SLOT_BUDGET, object_budget
from tests.test_wire import sample_profile

LIMIT = 4 * 1024 * 1024


def seal_raw(body: bytes, *, compress: bool = True, flags: int | None = None) -> bytes:
    if compress:
        body = zlib.compress(body, 9)
    f = (1 if compress else 0) if flags is None else flags
    return HEADER.pack(MAGIC, 1, 0, f, uuid.uuid4().bytes, len(body), zlib.crc32(body)) + body


def seal(obj: object, **kw: object) -> bytes:
    return seal_raw(msgpack.packb(obj, use_bin_type=True), **kw)  # type: ignore[arg-type]


def body_with(**changes: object) -> dict:
    d = sample_profile(20).to_dict()
    d.update(changes)
    return {"producer": {"name": "t"}, "created_at": 1.0, "profiles": [d]}


def refused(data: bytes, match: str, **kw: object) -> None:
    """Refused with a typed error, and with little Python memory (the C side is bounded by the pre-scan)."""
    tracemalloc.start()
    try:
        with pytest.raises(WireFormatError, match=match):
            decode_envelope(data, max_bytes=LIMIT, **kw)  # type: ignore[arg-type]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024, peak


def test_the_issue_nested_empty_arrays_are_refused_cheaply() -> None:
    # An array32 claiming 64M elements followed by 16M empty arrays: 19 s and 1.29 GB before.
    body = b"\x81\xa8profiles\xdd" + (64 * 1024 * 1024).to_bytes(4, "big") + b"\x90" * (4 * 1024 * 1024)
    data = seal_raw(body)
    assert len(data) < 20_000
    refused(data, "over the 65536-entry limit")
    nested = b"\x81\xa8profiles\xdc\xff\xff" + (b"\xdc\xff\xff" + b"\x90" * 65535) * 100
    refused(seal_raw(nested), f"more than {object_budget(LIMIT)} MessagePack objects")


def test_deep_nesting_is_refused_before_building() -> None:
    refused(seal_raw(b"\x81\xa8profiles" + b"\x91" * 5000 + b"\xc0"), f"deeper than {MAX_DEPTH} levels")
    refused(seal_raw(b"\x81\xa8profiles" + b"\xdd\x00\x01\x00\x00" * 1000 + b"\x90"), "deeper than")
    # small bodies skip the byte walk: containers just under its fast limits, claimed 1,000 deep,
    # must still stay within the memory bound (msgpack allocates what each header claims)
    refused(seal_raw(b"\x81\xa8profiles" + b"\xdc\x04\x00" * 1000 + b"\x90"), "deeper than")
    refused(seal_raw(b"\x81\xa8profiles" + b"\xde\x01\x00\xa1k" * 1000 + b"\x90"), "deeper than")
    refused(seal_raw(b"\x81\xa8profiles" + b"\x91" * 20 + b"\xc0"), f"deeper than {MAX_DEPTH} levels")


def test_decompression_bomb_is_refused() -> None:
    refused(seal_raw(b"\0" * (64 * 1024 * 1024)), "inflates past 16777216 bytes")


def test_huge_claimed_lengths_cost_nothing() -> None:
    refused(seal_raw(b"\x81\xa8profiles\xc6\xff\xff\xff\xff"), "over the 16777216-byte limit")
    refused(seal_raw(b"\x81\xa8profiles\xdb\x00\x10\x00\x00" + b"a" * 100), "string, over the 65536-byte limit")
    refused(seal_raw(b"\x81\xa8profiles\xdf\xff\xff\xff\xff"), "map, over the 8192-entry limit")
    refused(seal_raw(b"\x81\xa8profiles\xdc\x00\x05\xc0"), "truncated")


def test_extension_types_and_unknown_flags_are_refused() -> None:
    refused(seal_raw(b"\x81\xa8profiles\xd4\x01\x00"), "extension type")
    refused(seal(body_with(), flags=0x0003), "unknown flag bits 0x0002")
    refused(seal(body_with(), compress=False, flags=0x8000), "unknown flag bits 0x8000")


@pytest.mark.parametrize("changes, match", [
    ({"rows": 2**63}, "outside"),
    ({"rows": -1}, "outside"),
    ({"rows": MAX_COUNT + 1, "rows_profiled": 20}, "outside"),
    ({"rows": 20.0}, "expected an integer"),
    ({"rows": True}, "expected an integer"),
    ({"rows_profiled": 21}, "rows_profiled 21 > rows 20"),
    ({"start": float("nan")}, "not finite"),
    ({"end": float("inf")}, "not finite"),
    ({"start": 120.0, "end": 60.0}, "does not end after it starts"),
    ({"start": 60.0, "end": 60.0}, "does not end after it starts"),
    ({"model": ""}, "model is empty"),
    ({"model": "m\x00"}, "control characters"),
    ({"model": "x" * 257}, "over the 256-character limit"),
    ({"variant": 7}, "expected a string"),
    ({"source": "dev\n1"}, "control characters"),
    ({"cohort": [["site", "a\x1b[31m"]]}, "control characters"),
    ({"cohort": [["site"]]}, "pair"),
    ({"cohort": [[f"k{i}", "v"] for i in range(33)]}, "over the 32-entry limit"),
    ({"config": {"kll_k": "400"}}, "expected an integer"),
])
def test_profile_fields_out_of_bounds(changes: dict, match: str) -> None:
    refused(seal(body_with(**changes)), match)


def test_column_invariants_and_names() -> None:
    d = sample_profile(20).to_dict()
    d["features"]["x"]["missing"] += 1
    refused(seal({"profiles": [d]}), r"features\['x'\] counts add up to 21, not rows_profiled 20")
    d = sample_profile(20).to_dict()
    d["features"]["x"]["count"] = -5
    refused(seal({"profiles": [d]}), "outside")
    d = sample_profile(20).to_dict()
    d["features"]["bad\tname"] = d["features"].pop("x")
    refused(seal({"profiles": [d]}), "control characters")
    for bad, match in (("", "is empty"), ("n" * 257, "over the 256-character limit"), (b"bin", "expected a string"),
                       ("ok\x85", "control characters")):  # each name checked even when the rest are clean
        d = sample_profile(20).to_dict()
        d["features"][bad] = d["features"].pop("x")
        refused(seal({"profiles": [d]}), match)
    d = sample_profile(20).to_dict()
    d["features"]["x"]["kind"] = "tensor"
    refused(seal({"profiles": [d]}), "unknown kind 'tensor'")
    d = sample_profile(20).to_dict()
    d["features"]["x"]["min"] = float("nan")
    refused(seal({"profiles": [d]}), "not finite")


def test_sketch_preambles_cannot_ask_for_huge_allocations() -> None:
    d = sample_profile(20).to_dict()
    fi = bytearray(d["features"]["city"]["fi"])
    fi[3] = fi[4] = 26
    d["features"]["city"]["fi"] = bytes(fi)
    refused(seal({"profiles": [d]}), "asks for 2\\*\\*26 slots")
    d = sample_profile(20).to_dict()
    fi = bytearray(d["features"]["city"]["fi"])
    fi[3] = fi[4] = 23
    d["features"]["city"]["fi"] = bytes(fi)
    d["profiles"] = None
    many = {f"c{i}": d["features"]["city"] for i in range(3)}
    d["features"] = {**d["features"], **many}
    refused(seal({"profiles": [d]}), f"more than {SKETCH_SLOT_BUDGET} slots")


def test_producer_values_must_be_scalars() -> None:
    refused(seal({"producer": {"name": [1, 2]}, "profiles": []}), "expected a string")
    env = decode_envelope(seal({"producer": {"spool_pending": 3}, "profiles": []}))
    assert env.producer == {"spool_pending": "3"}


def test_reference_profiles_may_be_instants() -> None:
    p = sample_profile(20)
    p.end = p.start
    data = encode_envelope(Envelope([p]))
    refused(data, "does not end after it starts")
    assert decode_envelope(data, instant_ok=True).profiles[0].rows == 20


def test_largest_valid_counts_decode() -> None:
    p = sample_profile(20)
    p.rows = MAX_COUNT
    assert decode_envelope(encode_envelope(Envelope([p]))).profiles[0].rows == MAX_COUNT


@pytest.mark.parametrize("key, value, match", [
    ("count", True, "expected an integer"),
    ("count", 17.0, "expected an integer"),
    ("missing", -1, "outside"),
    ("nan", "0", "expected an integer"),
    ("inf", None, "expected an integer"),
    ("absent", MAX_COUNT + 1, "outside"),
    ("min", float("inf"), "not finite"),
    ("max", float("nan"), "not finite"),
    ("min", True, "expected a number"),
    ("max", "3.5", "expected a number"),
    ("sum", None, "expected a number"),
    ("sumsq", [1.0], "expected a number"),
    ("kll", "not bytes", "expected binary"),
    ("kll", None, "expected binary"),
    ("kind", None, "unknown kind None"),
])
def test_every_numeric_column_field_is_checked(key: str, value: object, match: str) -> None:
    # numeric column maps take a fast path (one lookup, chained type tests); any defect in one of
    # its twelve values must leave it for the precise checks, which refuse it and name the field
    d = sample_profile(20).to_dict()
    d["features"]["x"][key] = value
    refused(seal({"profiles": [d]}), match)


@pytest.mark.parametrize("key, match", [("count", "expected an integer"), ("kll", "expected binary"),
                                        ("sum", "expected a number"), ("kind", "unknown kind None"),
                                        ("min", "malformed: KeyError")])
def test_a_numeric_column_missing_a_key_is_refused(key: str, match: str) -> None:
    d = sample_profile(20).to_dict()
    del d["features"]["x"][key]
    refused(seal({"profiles": [d]}), match)


@pytest.mark.parametrize("kll", [b"", b"\x05", b"\x05\x01\x0f garbage", None])
def test_hostile_sketch_bytes_are_refused(kll: bytes | None) -> None:
    d = sample_profile(20).to_dict()
    good = d["features"]["x"]["kll"]
    d["features"]["x"]["kll"] = good[: len(good) // 2] if kll is None else kll  # None: a truncated sketch
    refused(seal({"profiles": [d]}), "malformed")


def test_a_numeric_column_with_extra_keys_still_has_its_depth_checked() -> None:
    d = sample_profile(20).to_dict()
    nested: object = 1
    for _ in range(MAX_DEPTH):
        nested = [nested]
    d["features"]["x"]["extra"] = nested
    refused(seal({"profiles": [d]}), "deeper than")
