"""Wire envelope: round trips, and every defect raises exactly one typed error (fuzzed)."""

from __future__ import annotations

import struct
import uuid
import zlib

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.errors import DriftlineError, UnsupportedVersionError, WireFormatError
from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.wire import (
    FORMAT_MAJOR,
    HEADER,
    MAGIC,
    PLAIN_MAX_BYTES,
    Envelope,
    decode_envelope,
    decode_profile,
    encode_envelope,
    encode_profile,
    read_profile_file,
    write_profile_file,
)


def sample_profile(n: int = 1000, seed: int = 0) -> WindowProfile:
    rng = np.random.default_rng(seed)
    p = WindowProfile(StreamKey.of("m", "v2", "canary", "dev-9", {"site": "oslo"}), 60.0, 120.0,
                      ProfileConfig(categorical=frozenset({"label"})))
    p.update(
        {"x": rng.normal(size=n), "city": rng.choice(["a", "b"], size=n)},
        {"score": rng.random(n), "label": rng.integers(0, 3, n)},
        latency_ms=rng.gamma(2, 3, n),
        errors=3,
    )
    return p


ENVELOPE = encode_envelope(Envelope([sample_profile(), sample_profile(50, 1)], producer={"device": "dev-9"}))


def test_round_trip_preserves_everything() -> None:
    env = Envelope([sample_profile()], producer={"name": "t", "device": "d"})
    out = decode_envelope(encode_envelope(env))
    assert out.envelope_id == env.envelope_id
    assert out.producer == env.producer
    assert out.created_at == env.created_at
    assert [p.to_dict() for p in out.profiles] == [p.to_dict() for p in env.profiles]
    assert out.rows == env.rows


def test_uncompressed_round_trip_and_header_layout() -> None:
    env = Envelope([sample_profile(10)])
    data = encode_envelope(env, compress=False)
    magic, major, minor, flags, raw_id, length, crc = HEADER.unpack_from(data)
    assert (magic, major, flags) == (MAGIC, FORMAT_MAJOR, 0)
    assert uuid.UUID(bytes=raw_id) == uuid.UUID(env.envelope_id)
    assert length == len(data) - HEADER.size and crc == zlib.crc32(data[HEADER.size:])
    assert msgpack.unpackb(data[HEADER.size:])["profiles"][0]["model"] == "m"
    assert decode_envelope(data).profiles[0].to_dict() == env.profiles[0].to_dict()


def test_the_default_compresses_a_body_zlib_shrinks_by_a_quarter_or_one_over_1_mib() -> None:
    """Float64 sketches barely compress, so they go plain (no inflate at the service); a body of
    repetitive labels goes compressed; both forms, and both forced forms, decode to the same profiles."""
    rng = np.random.default_rng(3)
    numeric = WindowProfile(StreamKey.of("m", "v"), 0.0, 60.0).update(rng.normal(size=(100, 20)),
                                                                      feature_names=[f"f{i}" for i in range(20)])
    labels = WindowProfile(StreamKey.of("m", "v"), 0.0, 60.0, ProfileConfig(categorical=frozenset({"c"})))
    labels.update({"c": np.array(["same-long-category-label"] * 500)}, {"label": np.zeros(500)})
    for prof, flag in ((numeric, 0), (labels, 1)):
        env = Envelope([prof])
        data = encode_envelope(env)
        forced = {c: encode_envelope(env, compress=c) for c in (True, False)}
        plain = len(forced[False]) - HEADER.size
        packed = len(zlib.compress(forced[False][HEADER.size:], 1))
        assert (packed <= 0.75 * plain) == bool(flag), (packed, plain)
        assert HEADER.unpack_from(data)[3] == flag
        assert data == forced[bool(flag)]
        assert (HEADER.unpack_from(forced[True])[3], HEADER.unpack_from(forced[False])[3]) == (1, 0)
        for raw in (data, *forced.values()):
            assert decode_envelope(raw).profiles[0].to_dict() == prof.to_dict()
    # a body over 1 MiB goes compressed whenever that saves anything, so it meets the size limits it
    # met before (here float64 sketches of 1,500 columns: about 14% smaller)
    wide = WindowProfile(StreamKey.of("m", "v"), 0.0, 60.0).update(rng.normal(size=(100, 1500)),
                                                                   feature_names=[f"f{i}" for i in range(1500)])
    big = Envelope([wide])
    plain = encode_envelope(big, compress=False)
    assert len(plain) - HEADER.size > PLAIN_MAX_BYTES
    assert len(zlib.compress(plain[HEADER.size:], 1)) > 0.75 * (len(plain) - HEADER.size)
    assert encode_envelope(big) == encode_envelope(big, compress=True)


def test_a_profile_as_a_blob() -> None:
    """The store's and spool's one-profile blob: the zero id and time, deterministic, exactly one profile."""
    p = sample_profile(50)
    blob = encode_profile(p)
    # the bytes the store wrote by hand before encode_profile existed: stored windows stay readable
    assert blob == encode_envelope(Envelope([p], envelope_id=str(uuid.UUID(int=0)), created_at=0.0))
    assert blob == encode_profile(p.copy())
    assert decode_profile(blob).to_dict() == p.to_dict()
    assert decode_profile(blob, trusted=True).to_dict() == p.to_dict()
    with pytest.raises(WireFormatError, match="expected one profile, the envelope holds 2"):
        decode_profile(encode_envelope(Envelope([p, sample_profile(5, seed=1)])))
    with pytest.raises(WireFormatError, match="expected one profile, the envelope holds 0"):
        decode_profile(encode_envelope(Envelope([])))


def test_profile_file_round_trip(tmp_path) -> None:
    p = sample_profile()
    write_profile_file(tmp_path / "ref.dlp", p)
    assert read_profile_file(tmp_path / "ref.dlp").to_dict() == p.to_dict()


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"hello world", "bad magic"),
        (ENVELOPE[:10], "truncated"),
        (ENVELOPE[:-5], "truncated"),
        (ENVELOPE + b"xx", "trailing"),
        (ENVELOPE[:40] + bytes([ENVELOPE[40] ^ 0xFF]) + ENVELOPE[41:], "checksum"),
    ],
    # ids by position: the envelope's bytes differ between processes (pytest-xdist workers must agree)
    ids=["empty", "bad-magic", "truncated-head", "truncated-tail", "trailing", "checksum"],
)
def test_defects_have_clear_messages(data: bytes, message: str) -> None:
    with pytest.raises(WireFormatError, match=message):
        decode_envelope(data)


def test_oversized_is_refused_before_parsing() -> None:
    with pytest.raises(WireFormatError, match="over the 100-byte limit"):
        decode_envelope(ENVELOPE, max_bytes=100)


def test_unknown_major_version() -> None:
    data = bytearray(ENVELOPE)
    data[4] = FORMAT_MAJOR + 1
    with pytest.raises(UnsupportedVersionError, match=f"version {FORMAT_MAJOR + 1}.x is not supported"):
        decode_envelope(bytes(data))


def test_newer_minor_version_is_read() -> None:
    data = bytearray(ENVELOPE)
    data[5] = 7
    assert len(decode_envelope(bytes(data)).profiles) == 2


def _seal(body_obj: object, compress: bool = False) -> bytes:
    body = msgpack.packb(body_obj, use_bin_type=True)
    flags = 0
    if compress:
        body, flags = zlib.compress(body), 1
    return HEADER.pack(MAGIC, FORMAT_MAJOR, 0, flags, uuid.uuid4().bytes, len(body), zlib.crc32(body)) + body


def test_decompression_bomb_is_refused() -> None:
    bomb = _seal({"pad": b"\0" * (20 * 1024 * 1024), "profiles": []}, compress=True)
    assert len(bomb) < 100_000
    with pytest.raises(WireFormatError, match="inflates past"):
        decode_envelope(bomb, max_bytes=1024 * 1024)


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"profiles": "nope"},
        {"profiles": [1, 2]},
        {"profiles": [{"model": "m"}]},
        {"profiles": [], "producer": [1]},
    ],
)
def test_valid_frame_with_bad_body(body: object) -> None:
    with pytest.raises(WireFormatError):
        decode_envelope(_seal(body))


def test_sketch_bytes_that_are_garbage_inside_a_valid_frame() -> None:
    d = sample_profile(20).to_dict()
    d["features"]["x"]["kll"] = b"\x05\x01\x0f garbage"
    with pytest.raises(WireFormatError, match="malformed"):
        decode_envelope(_seal({"profiles": [d]}))


def test_lazy_sketches_are_checked_at_decode_and_behave_like_built_ones() -> None:
    """``lazy=True`` (the service's ingest) still deserializes every numeric sketch while decoding, so
    bad bytes are refused there with the same error; a kept column builds its sketch on first use and
    then answers, merges, copies and re-encodes exactly like an eagerly built one."""
    d = sample_profile(20).to_dict()
    d["features"]["x"]["kll"] = b"\x05\x01\x0f garbage"
    errors = []
    for lazy in (False, True):
        with pytest.raises(WireFormatError, match="malformed") as info:
            decode_envelope(_seal({"profiles": [d]}), lazy=lazy)
        errors.append(str(info.value))
    assert errors[0] == errors[1]
    eager, lazy_env = (decode_envelope(ENVELOPE, lazy=v) for v in (False, True))
    for a, b in zip(eager.profiles, lazy_env.profiles, strict=True):
        for col in b.features.values():
            if col.kind == "numeric":
                assert col._kll is None and col._kll_bytes is not None  # not built yet
        assert encode_profile(b) == encode_profile(a)  # re-encoding builds them: the same bytes
        assert b.features["x"]._kll is not None and b.features["x"]._kll_bytes is None
    fresh = decode_envelope(ENVELOPE, lazy=True).profiles[0]
    ref = eager.profiles[0]
    assert fresh.features["x"].quantiles([0.1, 0.5, 0.9]).tolist() == ref.features["x"].quantiles([0.1, 0.5, 0.9]).tolist()
    assert fresh.outputs["score"].copy().to_dict() == ref.outputs["score"].to_dict()
    merged_lazy = decode_envelope(ENVELOPE, lazy=True).profiles[0]
    merged_lazy.merge(decode_envelope(ENVELOPE, lazy=True).profiles[1])
    merged_eager = decode_envelope(ENVELOPE).profiles[0]
    merged_eager.merge(decode_envelope(ENVELOPE).profiles[1])
    assert merged_lazy.to_dict() == merged_eager.to_dict()


def test_a_lazily_read_numeric_profile_builds_its_columns_on_first_read() -> None:
    """The service's ingest reads all-numeric profiles without building column objects: every sketch
    is still deserialized at decode (bad bytes and missing fields raise the same errors as an eager
    read), the catalog gets the names without building anything, and the first read of ``features``
    builds columns equal to eagerly read ones."""
    import copy

    from driftline.service.limits import entries

    rng = np.random.default_rng(5)
    p = WindowProfile(StreamKey.of("m", "v1", "baseline", "d"), 60.0, 120.0)
    p.update({"x": rng.normal(size=300), "y": rng.gamma(2, 2, 300)}, {"score": rng.random(300)})
    good = p.to_dict()
    for defect in ("kll", "sum"):
        d = p.to_dict()
        if defect == "kll":
            d["features"]["y"]["kll"] = b"\x05\x01\x0f garbage"
        else:
            del d["features"]["y"]["sum"]
        messages = []
        for lazy in (False, True):
            with pytest.raises(WireFormatError) as info:
                decode_envelope(_seal({"profiles": [d]}), lazy=lazy)
            messages.append(str(info.value))
        assert messages[0] == messages[1]
    eager = decode_envelope(_seal({"profiles": [good]})).profiles[0]
    lazy_p = decode_envelope(_seal({"profiles": [good]}), lazy=True).profiles[0]
    assert "features" not in vars(lazy_p) and "outputs" not in vars(lazy_p)  # nothing built yet
    assert lazy_p.column_names("features") == ("x", "y") and lazy_p.column_names("outputs") == ("score",)
    assert entries([lazy_p]) == entries([eager]) and "features" not in vars(lazy_p)
    twin = copy.deepcopy(lazy_p)  # a copy of an unbuilt profile builds its own columns
    assert sorted(lazy_p.features) == ["x", "y"]  # the first read builds them
    assert "_pending_columns" not in vars(lazy_p) and lazy_p.features["x"]._kll is None  # sketches still lazy
    assert lazy_p.to_dict() == eager.to_dict() and twin.to_dict() == eager.to_dict()
    assert encode_profile(lazy_p) == encode_profile(eager)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        _ = lazy_p.nonexistent


def test_inconsistent_counts_are_refused() -> None:
    d = sample_profile(20).to_dict()
    d["rows_profiled"] = d["rows"] + 1
    with pytest.raises(WireFormatError, match="rows_profiled 21 > rows 20"):
        decode_envelope(_seal({"profiles": [d]}))


def _outcome(data: bytes, lazy: bool) -> tuple[str, object]:
    try:
        env = decode_envelope(data, max_bytes=64 * 1024, lazy=lazy)
    except WireFormatError as exc:
        return type(exc).__name__, str(exc)
    except Exception as exc:  # pragma: no cover - the failure we are looking for
        raise AssertionError(f"decode (lazy={lazy}) raised {type(exc).__name__}: {exc}") from exc
    return "ok", [p.to_dict() for p in env.profiles]


def _assert_only_typed(data: bytes) -> None:
    """Only typed errors, and the lazy decode (the service's ingest) refuses and accepts exactly what
    the eager one does, with the same error and the same profiles."""
    assert _outcome(data, lazy=True) == _outcome(data, lazy=False)


@settings(max_examples=4000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=300))
def test_fuzz_garbage(data: bytes) -> None:
    _assert_only_typed(data)
    _assert_only_typed(MAGIC + data)


@settings(max_examples=4000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, len(ENVELOPE) - 1), st.integers(0, 255), st.integers(0, len(ENVELOPE)))
def test_fuzz_mutated_and_truncated_envelopes(pos: int, byte: int, cut: int) -> None:
    data = bytearray(ENVELOPE)
    data[pos] = byte
    _assert_only_typed(bytes(data))
    _assert_only_typed(ENVELOPE[:cut])


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8) | st.binary(max_size=16),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
@given(json_like)
def test_fuzz_valid_frames_with_arbitrary_bodies(body: object) -> None:
    _assert_only_typed(_seal(body))
    _assert_only_typed(_seal({"profiles": [body]}))


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(sorted(sample_profile(20).to_dict())), json_like)
def test_fuzz_profile_fields_with_wrong_types(field: str, value: object) -> None:
    d = sample_profile(20).to_dict()
    d[field] = value
    _assert_only_typed(_seal({"profiles": [d]}))


def test_every_wire_error_is_a_driftline_error() -> None:
    assert issubclass(WireFormatError, DriftlineError)
    assert issubclass(UnsupportedVersionError, WireFormatError)
    assert struct.calcsize(">4sBBH16sII") == HEADER.size == 32


def test_format_1_envelope_with_float_sketches_is_read_exactly() -> None:
    """Major 1 carried KLL *floats* sketches; a reader of major 2 widens them to doubles, item for item."""
    from datasketches import kll_floats_sketch

    values = np.random.default_rng(3).normal(10, 2, size=20_000)
    prof = WindowProfile(StreamKey.of("m", "v1"), 0, 60).update({"x": values})
    legacy = prof.to_dict()
    floats = kll_floats_sketch(prof.config.kll_k)
    floats.update(values.astype(np.float32))
    legacy["features"]["x"]["kll"] = bytes(floats.serialize())
    body = msgpack.packb({"producer": {}, "created_at": 0.0, "profiles": [legacy]}, use_bin_type=True)
    data = HEADER.pack(MAGIC, 1, 0, 0, uuid.uuid4().bytes, len(body), zlib.crc32(body)) + body
    col = decode_envelope(data).profiles[0].features["x"]
    assert col.kll.n == floats.n == 20_000
    assert list(col.kll) == [(float(v), w) for v, w in floats]
    assert col.quantiles([0.1, 0.5, 0.9]).tolist() == [floats.get_quantile(r) for r in (0.1, 0.5, 0.9)]
    assert encode_envelope(Envelope([prof]))[4] == FORMAT_MAJOR == 2
