"""The ingest fast path (driftline.wirefast) against the general path: the same envelopes accepted,
the same profiles built, the same refusals with the same messages, over thousands of mutations."""

from __future__ import annotations

import time
import uuid
import zlib

import msgpack
import numpy as np
import pytest

from driftline import wire, wirefast
from driftline.errors import WireFormatError
from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.wire import HEADER, MAGIC, Envelope, decode_envelope, encode_envelope
from tests.fuzz_support import cases

pytestmark = pytest.mark.skipif(not wirefast.AVAILABLE, reason="msgspec (the service extra) is not installed")


def _outcome(data: bytes, lazy: bool) -> tuple[str, object]:
    try:
        env = decode_envelope(data, lazy=lazy)
    except WireFormatError as exc:
        return "refused", f"{type(exc).__name__}: {exc}"
    return "accepted", (env.envelope_id, env.producer, env.created_at, env.conformance,
                        [p.to_dict() for p in env.profiles])


def _seal(body: dict, major: int = wire.FORMAT_MAJOR) -> bytes:
    raw = msgpack.packb(body, use_bin_type=True)
    return HEADER.pack(MAGIC, major, 0, 0, uuid.uuid4().bytes, len(raw), zlib.crc32(raw)) + raw


@pytest.fixture
def fast_hits(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each decode took the fast path (True) or fell back to the general one (False)."""
    hits: list[bool] = []
    real = wire.decode_common

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        hits.append(out is not None)
        return out

    monkeypatch.setattr(wire, "decode_common", spy)
    return hits


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_and_general_paths_agree_on_every_mutation(seed: int, fast_hits: list[bool]) -> None:
    now = time.time()
    accepted = refused = 0
    for case in cases(seed, 1500, now, numeric_only=True):
        eager, lazy = _outcome(case.data, False), _outcome(case.data, True)
        assert lazy == eager, (seed, case.index, case.mutation)
        accepted += eager[0] == "accepted"
        refused += eager[0] == "refused"
    assert accepted > 300 and refused > 300, (accepted, refused)
    assert sum(fast_hits) > 300, sum(fast_hits)  # the fast path really ran: most valid envelopes took it
    assert len(fast_hits) - sum(fast_hits) > 300  # and sent the rest down the general path


def test_the_general_fuzz_corpus_agrees_too() -> None:
    """Categorical columns, reservoirs and the rest: the fast path declines them, the result is the same."""
    for case in cases(7, 800, time.time()):
        assert _outcome(case.data, True) == _outcome(case.data, False), (case.index, case.mutation)


def _numeric_body(rng: np.random.Generator, **extra) -> dict:
    p = WindowProfile(StreamKey.of("m", "v1", "baseline", "dev-1", {"site": "s"}), 100.0, 160.0,
                      ProfileConfig(kll_k=100))
    p.update({"a": rng.normal(size=50)}, {"score": rng.random(50)}, latency_ms=rng.gamma(2, 2, 50))
    d = p.to_dict()
    d.update(extra)
    return {"producer": {"device": "dev-1", "rss_bytes": 123, "ok": True, "cpu": 1.5}, "created_at": 5.0,
            "profiles": [d]}


@pytest.mark.parametrize("edit", [
    lambda b: b["profiles"][0]["config"].update(kll_k=None),           # a size given as nil
    lambda b: b.update(created_at=None),
    lambda b: b["profiles"][0].update(cohort=None),
    lambda b: b["profiles"][0].update(start=True),                     # a bool is not a number
    lambda b: b["profiles"][0].update(rows=1.0 * b["profiles"][0]["rows"]),  # an integral float is not a count
    lambda b: b["profiles"][0]["features"]["a"].update(min=float("nan")),
    lambda b: b["profiles"][0]["features"]["a"].update(max=float("inf")),
    lambda b: b["profiles"][0]["features"]["a"].update(count=True),
    lambda b: b["profiles"][0]["features"]["a"].pop("min"),
    lambda b: b["profiles"][0]["runtime"].update(cpu_seconds=-1.0),
    lambda b: b["profiles"][0]["runtime"].update(rss_bytes=2**62 + 1),
    lambda b: b["producer"].update({"k": "line\nbreak"}),
    lambda b: b["producer"].update({"x" * 65: "v"}),
    lambda b: b["profiles"][0].update(model=""),
    lambda b: b["profiles"][0].update(variant="\x85"),
    lambda b: b["profiles"][0].update(rows_profiled=b["profiles"][0]["rows"] + 1),
    lambda b: b["profiles"][0].update(end=b["profiles"][0]["start"]),
])
def test_edge_cases_are_refused_by_both_paths_alike(edit, fast_hits: list[bool]) -> None:
    rng = np.random.default_rng(0)
    ok = _seal(_numeric_body(rng))
    assert _outcome(ok, True) == _outcome(ok, False)
    body = _numeric_body(rng)
    edit(body)
    data = _seal(body)
    eager, lazy = _outcome(data, False), _outcome(data, True)
    assert eager[0] == "refused", eager
    assert lazy == eager
    assert fast_hits[0] is True and fast_hits[-1] is False


def test_a_sidecar_window_takes_the_fast_path_and_reads_like_the_general_one(fast_hits: list[bool]) -> None:
    """Serving stats, a cohort, a config, producer numbers, wire format 1's float sketches too."""
    rng = np.random.default_rng(3)
    body = _numeric_body(rng)
    for data in (_seal(body), encode_envelope(Envelope([WindowProfile.from_dict(body["profiles"][0])],
                                                       producer={"device": "d"}))):
        assert _outcome(data, True) == _outcome(data, False)
    assert fast_hits == [True, True]
    lazy = decode_envelope(_seal(body), lazy=True).profiles[0]
    assert fast_hits[-1] is True
    assert lazy.column_names("features") == ("a",) and lazy.runtime is not None
    built = WindowProfile.from_dict(body["profiles"][0]).features["a"]
    assert list(lazy.features["a"].quantiles([0.1, 0.5, 0.9])) == list(built.quantiles([0.1, 0.5, 0.9]))


def test_bodies_past_the_fast_unpack_size_take_the_general_path(fast_hits: list[bool]) -> None:
    """Over ``object_budget(max_bytes)`` the general path walks the bytes first; the fast path stays out."""
    big = _numeric_body(np.random.default_rng(4))
    big["profiles"] = big["profiles"] * 60
    data = _seal(big)
    assert 65536 < len(data) < 1 << 20  # object_budget(1 MiB) is 65,536
    for limit, fast in ((1 << 20, None), (32 << 20, True)):
        del fast_hits[:]
        eager = _outcome_limited(data, False, limit)
        assert _outcome_limited(data, True, limit) == eager and eager[0] == "accepted"
        assert fast_hits == ([] if fast is None else [True])


def _outcome_limited(data: bytes, lazy: bool, max_bytes: int) -> tuple[str, object]:
    env = decode_envelope(data, lazy=lazy, max_bytes=max_bytes)
    return "accepted", [p.to_dict() for p in env.profiles]


@pytest.mark.parametrize("body", [
    b"\x81\xa8profiles\xdd\x7f\xff\xff\xff",                 # an array that claims 2**31 profiles, holds none
    b"\x81\xa8profiles\x91" + b"\xdf\x7f\xff\xff\xff" * 8,  # nested maps that each claim 2**31 entries
    b"\x81\xa8profiles" + b"\x91" * 5000 + b"\xc0",           # 5,000 levels deep
    b"\x81\xa8profiles\xdc\xff\xff" + b"\x90" * 65535,       # 65,535 empty profiles
])
def test_hostile_small_bodies_cost_the_fast_path_little_memory(body: bytes) -> None:
    """What the claimed lengths would allocate is never allocated: the decoder fails first and says None."""
    import tracemalloc

    from driftline.wirefast import decode_common

    tracemalloc.start()
    try:
        assert decode_common(body, "doubles", reread=lambda i: None) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, peak
    data = _seal_raw(body)
    assert _outcome(data, True) == _outcome(data, False) and _outcome(data, False)[0] == "refused"


def _seal_raw(raw: bytes) -> bytes:
    return HEADER.pack(MAGIC, wire.FORMAT_MAJOR, 0, 0, uuid.uuid4().bytes, len(raw), zlib.crc32(raw)) + raw
