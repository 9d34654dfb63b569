"""A seeded, structure-aware envelope fuzzer: valid envelopes from the project's own encoder, then
mutated at the field level (type changes, swaps, huge counts, nesting, bad names and windows), the
MessagePack level (bit flips, truncation) and the frame level (flags, version, checksum, cuts).

``cases(seed, n)`` is deterministic: a failing case reproduces from its seed and index.
"""

from __future__ import annotations

import copy
import random
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import msgpack
import numpy as np

from driftline.errors import WireFormatError
from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.wire import FORMAT_MAJOR, HEADER, MAGIC, Envelope, decode_envelope, encode_envelope
from driftline.wirecheck import MAX_COUNT

__all__ = ["Case", "cases", "expected"]

HUGE = [2**63, 2**62, 2**64 - 1, -1, -(2**63), MAX_COUNT, MAX_COUNT + 1, 0, 10**6]
ODD = [None, True, 1.5, float("nan"), float("-inf"), "s", "", b"\x00\x01", [1, "x"], {"a": 1}, -7, 2**40]
NAMES = ["m\x00", "x" * 300, "", "a\nb", "\x7f", "ok-name", "über", "🙂" * 10]


@dataclass(frozen=True)
class Case:
    """One request: its bytes, what mutation made it, and its index (to reproduce)."""

    index: int
    mutation: str
    data: bytes


def _bases(rng: np.random.Generator, now: float, numeric_only: bool = False) -> list[dict]:
    if numeric_only:  # the common shape (driftline.wirefast): numeric columns, serving stats on some
        return [WindowProfile(StreamKey.of(f"fuzz-{i % 4}", f"v{i % 2}", "baseline", f"dev-{i}",
                                           {"site": "s"} if i % 3 else None),
                              now - 600 + i, now - 540 + i, ProfileConfig(kll_k=64 if i % 2 else 200))
                .update({"a": rng.normal(size=20 + 10 * i), "b": rng.exponential(size=20 + 10 * i)},
                        {"score": rng.random(20 + 10 * i)},
                        latency_ms=rng.gamma(2, 2, 20 + 10 * i) if i % 2 else None).to_dict()
                for i in range(12)]
    out = []
    for i in range(12):
        cfg = ProfileConfig(categorical=frozenset({"city"}), reservoir_size=5 if i % 4 == 0 else 0, kll_k=64)
        p = WindowProfile(StreamKey.of(f"fuzz-{i % 4}", f"v{i % 2}", "baseline", f"dev-{i}", {"site": "s"}),
                          now - 600 + i, now - 540 + i, cfg)
        n = 20 + 10 * i
        p.update({"a": rng.normal(size=n), "city": rng.choice(["x", "y", "z"], n)},
                 {"score": rng.random(n)}, latency_ms=rng.gamma(2, 2, n) if i % 2 else None)
        out.append(p.to_dict())
    return out


def _seal(body: bytes, *, flags: int = 1, major: int = FORMAT_MAJOR, env_id: bytes | None = None) -> bytes:
    if flags & 1:
        body = zlib.compress(body, 1)
    return HEADER.pack(MAGIC, major, 0, flags, env_id or uuid.uuid4().bytes, len(body), zlib.crc32(body)) + body


def _paths(prof: dict) -> list[tuple[dict, str]]:
    """Every (container, key) in a profile that a field mutation may touch."""
    out = [(prof, k) for k in prof]
    for group in ("features", "outputs"):
        for col in prof.get(group, {}).values():
            out += [(col, k) for k in col]
    for sub in ("config", "runtime", "reservoir"):
        if isinstance(prof.get(sub), dict):
            out += [(prof[sub], k) for k in prof[sub]]
    return out


def _mutate(r: random.Random, body: dict) -> str:
    prof = r.choice(body["profiles"])
    kind = r.choice(["huge", "type", "swap", "drop", "extra", "nest", "name", "window", "sketch", "count"])
    paths = _paths(prof)
    holder, key = r.choice(paths)
    if kind == "huge":
        holder, key = r.choice([(h, k) for h, k in paths if isinstance(h.get(k), int) and not isinstance(h[k], bool)])
        holder[key] = r.choice(HUGE)
    elif kind == "type":
        holder[key] = copy.deepcopy(r.choice(ODD))
    elif kind == "swap":
        holder2, key2 = r.choice(paths)
        holder[key], holder2[key2] = holder2[key2], holder[key]
    elif kind == "drop":
        del holder[key]
    elif kind == "extra":
        holder[f"x-{r.randrange(100)}"] = r.choice([1, "new", [1, 2], {"k": "v"}])
    elif kind == "nest":
        v = holder[key]
        for _ in range(r.randrange(1, 40)):
            v = [v]
        holder[key] = v
    elif kind == "name":
        target = r.choice(["model", "model_version", "variant", "source", "feature", "cohort"])
        name = r.choice(NAMES)
        if target == "feature" and prof.get("features"):
            old = r.choice(list(prof["features"]))
            prof["features"][name] = prof["features"].pop(old)
        elif target == "cohort":
            prof["cohort"] = [[name, "v"]]
        else:
            prof[target] = name
    elif kind == "window":
        prof["start"], prof["end"] = r.choice([(float("nan"), 1.0), (5.0, float("inf")), (10.0, 5.0), (7.0, 7.0),
                                               (prof.get("end"), prof.get("start")), (1.0, 2.0)])
    elif kind == "sketch":
        cols = [c for g in ("features", "outputs") for c in prof.get(g, {}).values()]
        col = r.choice(cols)
        k = r.choice([k for k in col if isinstance(col[k], bytes)])
        b = bytearray(col[k])
        for _ in range(r.randrange(1, 4)):
            b[r.randrange(len(b))] ^= 1 << r.randrange(8)
        col[k] = bytes(b)
    else:  # a per-column count that breaks the invariant, or keeps it
        cols = [c for g in ("features", "outputs") for c in prof.get(g, {}).values()]
        col = r.choice(cols)
        col["missing"] = col.get("missing", 0) + r.choice([1, -1, 0])
    return kind


def cases(seed: int, n: int, now: float, *, numeric_only: bool = False) -> Iterator[Case]:
    """``n`` requests, about a third of them valid, from ``seed``; ``numeric_only``: mutations of
    envelopes of the common shape (numeric columns only), which the service reads on its fast path."""
    r = random.Random(seed)
    bases = _bases(np.random.default_rng(seed), now, numeric_only)
    packed_bases = [msgpack.packb(b, use_bin_type=True) for b in bases]
    bombs = [_seal(b"\x81\xa8profiles\xdc\xff\xff" + b"\x90" * 65535 + b"\x00" * size)
             for size in (1 << 20, 1 << 23, 1 << 25)]
    sent_valid: list[bytes] = []
    for i in range(n):
        picks = [r.choice(packed_bases) for _ in range(r.choice([1, 1, 1, 2]))]
        body = {"producer": {"name": "fuzz", "device": f"dev-{i % 7}"}, "created_at": now,
                "profiles": [msgpack.unpackb(b, raw=False) for b in picks]}
        roll = r.random()
        if roll < 0.30:
            mutation = "valid"
        elif roll < 0.75:
            mutation = _mutate(r, body)
        else:
            mutation = r.choice(["flip", "truncate", "flags", "major", "crc", "cut", "raw", "bomb", "dup"])
        try:
            packed = msgpack.packb(body, use_bin_type=True)
        except (OverflowError, TypeError, ValueError):  # an int no MessagePack can carry: send the original
            body["profiles"] = [copy.deepcopy(bases[0])]
            packed, mutation = msgpack.packb(body, use_bin_type=True), "valid"
        if mutation == "flip":
            b = bytearray(packed)
            for _ in range(r.randrange(1, 4)):
                b[r.randrange(len(b))] ^= 1 << r.randrange(8)
            data = _seal(bytes(b))
        elif mutation == "truncate":
            data = _seal(packed[: r.randrange(len(packed))])
        elif mutation == "flags":
            data = _seal(packed, flags=r.choice([0, 1]) | (1 << r.randrange(1, 16)))
        elif mutation == "major":
            data = _seal(packed, major=r.choice([0, FORMAT_MAJOR + 1, 255]))
        elif mutation == "crc":
            data = bytearray(_seal(packed))
            data[28] ^= 0xFF
            data = bytes(data)
        elif mutation == "cut":
            data = _seal(packed)[: r.randrange(40)]
        elif mutation == "raw":
            data = _seal(packed, flags=0)
        elif mutation == "bomb":
            data = r.choice(bombs)
        elif mutation == "dup" and sent_valid:
            data = r.choice(sent_valid)
        else:
            data = _seal(packed)
        if mutation == "valid" and r.random() < 0.1:
            data = encode_envelope(Envelope([WindowProfile.from_dict(p) for p in body["profiles"]]))
        if mutation == "valid":
            sent_valid.append(data)
        yield Case(i, mutation, data)


def expected(data: bytes) -> Envelope | None:
    """What the receivers must do: the envelope they must accept, or None when they must refuse it."""
    try:
        return decode_envelope(data)
    except WireFormatError:
        return None
