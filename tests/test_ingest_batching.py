"""The batched ingest transaction and the cheaper depth check (issue 22): same outcomes, fewer statements.

A poll batch's envelope ids go into the ledger in one ``INSERT ... RETURNING`` and its windows in one
``executemany``; the outcome of every envelope (accepted, duplicate, limited) must be what the
one-envelope-at-a-time path gave, on SQLite and on a real PostgreSQL. The depth check no longer walks
numeric column maps; nesting anywhere else, or under one of those maps' keys, is still refused.
"""

from __future__ import annotations

import uuid
import zlib

import msgpack
import numpy as np
import pytest

from driftline.errors import WireFormatError
from driftline.profile import StreamKey, WindowProfile
from driftline.service.limits import Caps
from driftline.service.store import SQLITE_PAGE_SIZE, Store
from driftline.wire import HEADER, MAGIC, Envelope, decode_envelope, encode_envelope


def _env(model: str, features: int = 3, seed: int = 0) -> tuple[Envelope, bytes]:
    rng = np.random.default_rng(seed)
    p = WindowProfile(StreamKey.of(model, "v1", "baseline", "dev-1"), 100.0, 160.0)
    p.update(rng.normal(size=(20, features)), feature_names=[f"f{i}" for i in range(features)])
    raw = encode_envelope(Envelope([p], producer={"device": "dev-1"}))
    return decode_envelope(raw), raw


def _check_batch(store: Store) -> None:
    a, b, c = _env("m-a", seed=1), _env("m-b", seed=2), _env("m-c", seed=3)
    first = store.ingest_many([a, b, a], "kafka")  # a second copy inside the batch is a duplicate
    assert [r.result for r in first] == ["accepted", "accepted", "duplicate"]
    second = store.ingest_many([b, c], "kafka")  # an id stored by an earlier batch is a duplicate
    assert [r.result for r in second] == ["duplicate", "accepted"]
    assert sorted(w.model for m in ("m-a", "m-b", "m-c") for w in store.windows(m)) == ["m-a", "m-b", "m-c"]
    stored = store.query("SELECT profile FROM windows WHERE model = ?", ("m-a",))[0][0]
    assert bytes(stored) == a[1]  # the checked bytes as received, never re-encoded
    # past the model cap: refused whole, its id left out of the ledger so it may come back later
    over = _env("m-d", seed=4)
    assert [r.result for r in store.ingest_many([over], "kafka")] == ["limited"]
    assert store.query("SELECT COUNT(*) FROM envelopes WHERE envelope_id = ?", (over[0].envelope_id,))[0][0] == 0
    assert store.windows("m-d") == []


def test_batched_ingest_outcomes_sqlite(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'b.sqlite'}", caps=Caps(max_models=3))
    try:
        _check_batch(store)
    finally:
        store.close()


def test_a_new_sqlite_database_has_16k_pages_and_an_old_one_keeps_its_own(tmp_path) -> None:
    """The page size only applies to a new database: one made by an earlier version (4 KiB pages,
    WAL) opens unchanged, and both hold the same windows."""
    import sqlite3

    old = sqlite3.connect(tmp_path / "old.sqlite")
    old.execute("PRAGMA page_size=4096")
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE t (x INTEGER)")
    old.close()
    for name, pages in (("new.sqlite", SQLITE_PAGE_SIZE), ("old.sqlite", 4096)):
        store = Store(f"sqlite:///{tmp_path / name}", caps=Caps(max_models=3))
        try:
            assert store.query("PRAGMA page_size")[0][0] == pages
            _check_batch(store)
        finally:
            store.close()
        store = Store(f"sqlite:///{tmp_path / name}", caps=Caps(max_models=3))  # and again, reopened
        try:
            assert store.query("PRAGMA page_size")[0][0] == pages
            assert sorted(w.model for m in ("m-a", "m-b", "m-c") for w in store.windows(m)) == ["m-a", "m-b", "m-c"]
        finally:
            store.close()


def test_batched_ingest_outcomes_postgres(postgres_server) -> None:
    store = Store(postgres_server.new_database(f"batch_{uuid.uuid4().hex[:8]}"), caps=Caps(max_models=3))
    try:
        _check_batch(store)
    finally:
        store.close()


def test_postgres_keeps_window_blobs_out_of_line_without_pglz(postgres_server) -> None:
    """Window blobs are stored EXTERNAL (plain bodies are not worth pglz's try); a second store on the
    same database finds it set and opens without altering the table; the windows read back as sent."""
    url = postgres_server.new_database(f"storage_{uuid.uuid4().hex[:8]}")
    first = Store(url, caps=Caps(max_models=3))
    try:
        second = Store(url, caps=Caps(max_models=3))
        try:
            storage = second.query("SELECT attstorage FROM pg_attribute WHERE attrelid = 'windows'::regclass "
                                   "AND attname = 'profile'")
            assert storage == [("e",)]
            _check_batch(second)
        finally:
            second.close()
    finally:
        first.close()


def test_batched_ingest_many_ids_in_several_statements(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'many.sqlite'}")
    try:
        items = [_env("m", features=1, seed=i) for i in range(1203)]  # more than two id statements
        res = store.ingest_many(items + items[:5], "kafka")
        assert [r.result for r in res].count("accepted") == 1203
        assert [r.result for r in res[1203:]] == ["duplicate"] * 5
        assert store.query("SELECT COUNT(*) FROM windows")[0][0] == 1203
    finally:
        store.close()


def _sealed(body: object) -> bytes:
    data = zlib.compress(msgpack.packb(body, use_bin_type=True))
    return HEADER.pack(MAGIC, 2, 0, 1, uuid.uuid4().bytes, len(data), zlib.crc32(data)) + data


def _numeric_shaped(value: object) -> dict[str, object]:
    col = {"kind": "numeric", "count": 0, "missing": 0, "nan": 0, "inf": 0, "invalid": 0, "absent": 0,
           "min": None, "max": None, "sum": 0.0, "sumsq": 0.0, "kll": b""}
    col["sum"] = value
    return col


def _deep(levels: int) -> object:
    node: object = [1]
    for _ in range(levels):
        node = [node]
    return node


def test_depth_still_refused_around_numeric_column_maps() -> None:
    profile = encode_envelope(Envelope([_env("m")[0].profiles[0]]), compress=True)  # the body is inflated below
    body = msgpack.unpackb(zlib.decompress(profile[HEADER.size:]), raw=False)
    # a numeric-shaped map under an unknown key is walked: the nesting below it is refused
    hostile = dict(body, extra={"x": _numeric_shaped(_deep(20))})
    with pytest.raises(WireFormatError, match="deeper than"):
        decode_envelope(_sealed(hostile))
    # inside a profile's features the map is not walked, and the container under its key is refused
    p = dict(body["profiles"][0])
    p["features"] = dict(p["features"], f0=dict(p["features"]["f0"], sum=_deep(20)))
    with pytest.raises(WireFormatError, match=r"\.sum is list"):
        decode_envelope(_sealed(dict(body, profiles=[p])))
    # a well-formed body still decodes
    assert decode_envelope(_sealed(body)).profiles[0].features.keys() == {"f0", "f1", "f2"}
