"""The durable store: SQLite (embedded default) or PostgreSQL (several replicas), one code path.

Plain SQL that both engines accept; the only differences (placeholders, auto-increment, binary type)
are confined to :class:`_Dialect`. One connection per process, guarded by a lock; every write that
must be atomic runs in :meth:`Store.transaction`.

Tables: ``envelopes`` (ids already merged: the exactly-once ledger), ``windows`` (one row per
stream, cohort, device and window, the profile as wire bytes), ``refs`` (reference profiles per model
version), ``canaries``, ``outbox`` (retraining requests) and ``retrain_state`` (cooldowns).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from driftline.profile import WindowProfile, merge_all
from driftline.wire import Envelope, decode_envelope, encode_envelope
from driftline.wirecheck import MAX_COUNT

from .errors import StoreError, Unprocessable

__all__ = ["IngestResult", "Store", "WindowRow"]


class _Dialect:
    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres
        self.blob = "BYTEA" if postgres else "BLOB"
        self.serial = "BIGSERIAL PRIMARY KEY" if postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"

    def sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.postgres else text


SCHEMA = [
    """CREATE TABLE IF NOT EXISTS envelopes (
        envelope_id TEXT PRIMARY KEY, received_at DOUBLE PRECISION NOT NULL, transport TEXT NOT NULL,
        producer TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS windows (
        id {serial}, model TEXT NOT NULL, version TEXT NOT NULL, variant TEXT NOT NULL, source TEXT NOT NULL,
        cohort TEXT NOT NULL, start_ts DOUBLE PRECISION NOT NULL, end_ts DOUBLE PRECISION NOT NULL,
        rows_observed BIGINT NOT NULL, received_at DOUBLE PRECISION NOT NULL, resolution TEXT NOT NULL,
        profile {blob} NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS windows_by_model ON windows (model, version, end_ts)",
    """CREATE TABLE IF NOT EXISTS refs (
        model TEXT NOT NULL, version TEXT NOT NULL, source TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        profile {blob} NOT NULL, PRIMARY KEY (model, version))""",
    """CREATE TABLE IF NOT EXISTS canaries (
        model TEXT PRIMARY KEY, config TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS outbox (
        id {serial}, dedup_key TEXT NOT NULL UNIQUE, model TEXT NOT NULL, target TEXT NOT NULL,
        url TEXT NOT NULL, body TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        next_attempt_at DOUBLE PRECISION NOT NULL, attempts INTEGER NOT NULL, status TEXT NOT NULL,
        last_error TEXT, delivered_at DOUBLE PRECISION)""",
    """CREATE TABLE IF NOT EXISTS retrain_state (
        model TEXT PRIMARY KEY, last_request_at DOUBLE PRECISION NOT NULL)""",
]


@dataclass(frozen=True)
class IngestResult:
    """What happened to one envelope."""

    envelope_id: str
    result: str  # "accepted" | "duplicate"
    windows: int


@dataclass(frozen=True)
class WindowRow:
    """A stored window's metadata with its decoded profile."""

    model: str
    version: str
    variant: str
    source: str
    cohort: dict[str, str]
    start: float
    end: float
    rows: int
    received_at: float
    profile: WindowProfile


class Store:
    """SQLite or PostgreSQL behind the same methods; ``url`` is ``sqlite:///path`` or ``postgresql://...``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.RLock()
        try:
            if url.startswith("sqlite://"):
                path = url[len("sqlite:///"):] or ":memory:"
                self.d = _Dialect(False)
                self._conn: Any = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            elif url.startswith(("postgresql://", "postgres://")):
                import psycopg

                self.d = _Dialect(True)
                self._conn = psycopg.connect(url, autocommit=True)
            else:
                raise StoreError(f"unsupported database_url {url!r}: use sqlite:///PATH or postgresql://...")
            for ddl in SCHEMA:
                self._conn.execute(ddl.format(serial=self.d.serial, blob=self.d.blob))
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot open the store {url.split('@')[-1]}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ---- plumbing --------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def _exec(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        return conn.execute(self.d.sql(sql), tuple(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return list(self._exec(self._conn, sql, params).fetchall())
            except Exception as exc:
                raise StoreError(f"database query failed: {exc}") from exc

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._lock:
            try:
                return int(self._exec(self._conn, sql, params).rowcount)
            except Exception as exc:
                raise StoreError(f"database write failed: {exc}") from exc

    # ---- ingest: the exactly-once step ----------------------------------------------------------
    def ingest(self, env: Envelope, transport: str, now: float | None = None, raw: bytes | None = None) -> IngestResult:
        """Record the envelope id and store its windows in one transaction; a known id is a duplicate."""
        return self.ingest_many([(env, raw)], transport, now)[0]

    def ingest_many(self, items: Sequence[tuple[Envelope, bytes | None]], transport: str,
                    now: float | None = None) -> list[IngestResult]:
        """Several envelopes in one transaction (a Kafka poll batch); each id is merged at most once.

        ``raw`` (the envelope's own bytes) is stored as the window blob when the envelope holds one
        profile, so the hot path never re-encodes sketches.
        """
        now = time.time() if now is None else now
        for env, _raw in items:  # BIGINT columns and the SUMs over them must never overflow
            for p in env.profiles:
                if not 0 <= p.rows <= MAX_COUNT:
                    raise Unprocessable(f"envelope {env.envelope_id} has a window of {p.rows} rows, "
                                        f"outside [0, {MAX_COUNT}]")
        out = []
        try:
            with self.transaction() as conn:
                for env, raw in items:
                    cur = self._exec(conn, "INSERT INTO envelopes (envelope_id, received_at, transport, producer) "
                                     "VALUES (?, ?, ?, ?) ON CONFLICT (envelope_id) DO NOTHING",
                                     (env.envelope_id, now, transport, json.dumps(env.producer)))
                    if cur.rowcount == 0:
                        out.append(IngestResult(env.envelope_id, "duplicate", 0))
                        continue
                    single = raw if raw is not None and len(env.profiles) == 1 else None
                    for p in env.profiles:
                        self._insert_window(conn, p, now, "raw", blob=single)
                    out.append(IngestResult(env.envelope_id, "accepted", len(env.profiles)))
            return out
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"could not store {len(items)} envelope(s): {exc}") from exc

    def _insert_window(self, conn: Any, p: WindowProfile, now: float, resolution: str, blob: bytes | None = None) -> None:
        if blob is None:
            blob = encode_envelope(Envelope([p], envelope_id="00000000-0000-0000-0000-000000000000", created_at=0.0))
        self._exec(conn, "INSERT INTO windows (model, version, variant, source, cohort, start_ts, end_ts, "
                   "rows_observed, received_at, resolution, profile) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (p.key.model, p.key.model_version, p.key.variant, p.key.source,
                    json.dumps(p.key.cohort_dict, sort_keys=True), p.start, p.end, p.rows, now, resolution, blob))

    # ---- reading windows --------------------------------------------------------------------------
    def windows(self, model: str, version: str | None = None, variant: str | None = None,
                since: float | None = None, until: float | None = None, source: str | None = None) -> list[WindowRow]:
        """Stored windows of a model that end in ``(since, until]``, oldest first."""
        sql = ("SELECT model, version, variant, source, cohort, start_ts, end_ts, rows_observed, received_at, profile "
               "FROM windows WHERE model = ?")
        params: list[Any] = [model]
        for col, val in (("version", version), ("variant", variant), ("source", source)):
            if val is not None:
                sql += f" AND {col} = ?"
                params.append(val)
        if since is not None:
            sql += " AND end_ts > ?"
            params.append(since)
        if until is not None:
            sql += " AND end_ts <= ?"
            params.append(until)
        sql += " ORDER BY start_ts, id"
        out = []
        for m, v, var, src, cohort, s, e, rows, rec, blob in self.query(sql, params):
            prof = decode_envelope(bytes(blob), max_bytes=1 << 30, trusted=True).profiles[0]
            out.append(WindowRow(m, v, var, src, json.loads(cohort), s, e, int(rows), rec, prof))
        return out

    def models(self) -> list[dict[str, Any]]:
        """Every model with its versions, rows and newest window."""
        # Rows are summed in two 32-bit halves: neither SUM can overflow (SQLite's SUM raises past
        # 2**63) below 2**31 windows per stream, and Python adds the halves exactly.
        res = self.query("SELECT model, version, variant, SUM(rows_observed / 4294967296), "
                         "SUM(rows_observed - 4294967296 * (rows_observed / 4294967296)), MIN(start_ts), MAX(end_ts), COUNT(*) "
                         "FROM windows GROUP BY model, version, variant ORDER BY model, version, variant")
        out: dict[str, dict[str, Any]] = {}
        for model, version, variant, hi, lo, first, last, n in res:
            rows = int(hi) * 4294967296 + int(lo)
            m = out.setdefault(model, {"name": model, "versions": [], "variants": [], "rows": 0, "windows": 0,
                                       "first_window_start": first, "last_window_end": last, "streams": []})
            if version not in m["versions"]:
                m["versions"].append(version)
            if variant not in m["variants"]:
                m["variants"].append(variant)
            m["rows"] += int(rows)
            m["windows"] += int(n)
            m["first_window_start"] = min(m["first_window_start"], first)
            m["last_window_end"] = max(m["last_window_end"], last)
            m["streams"].append({"version": version, "variant": variant, "rows": int(rows), "windows": int(n),
                                 "first_window_start": first, "last_window_end": last})
        return list(out.values())

    # ---- references ---------------------------------------------------------------------------------
    def put_reference(self, model: str, version: str, profile: WindowProfile, source: str) -> None:
        blob = encode_envelope(Envelope([profile], envelope_id="00000000-0000-0000-0000-000000000000", created_at=0.0))
        with self.transaction() as conn:
            self._exec(conn, "DELETE FROM refs WHERE model = ? AND version = ?", (model, version))
            self._exec(conn, "INSERT INTO refs (model, version, source, created_at, profile) VALUES (?, ?, ?, ?, ?)",
                       (model, version, source, time.time(), blob))

    def reference(self, model: str, version: str) -> tuple[WindowProfile, str] | None:
        rows = self.query("SELECT profile, source FROM refs WHERE model = ? AND version = ?", (model, version))
        if not rows:
            return None
        return decode_envelope(bytes(rows[0][0]), max_bytes=1 << 30, trusted=True).profiles[0], str(rows[0][1])

    def references(self) -> list[tuple[str, str, str]]:
        return [(str(a), str(b), str(c)) for a, b, c in self.query("SELECT model, version, source FROM refs")]

    # ---- canaries ---------------------------------------------------------------------------------
    def put_canary(self, model: str, config: dict[str, Any]) -> None:
        with self.transaction() as conn:
            self._exec(conn, "DELETE FROM canaries WHERE model = ?", (model,))
            self._exec(conn, "INSERT INTO canaries (model, config, created_at) VALUES (?, ?, ?)",
                       (model, json.dumps(config), time.time()))

    def canaries(self) -> dict[str, tuple[dict[str, Any], float]]:
        return {m: (json.loads(c), float(t)) for m, c, t in self.query("SELECT model, config, created_at FROM canaries")}

    def delete_canary(self, model: str) -> bool:
        return self.execute("DELETE FROM canaries WHERE model = ?", (model,)) > 0

    # ---- retention ------------------------------------------------------------------------------------
    def roll_up(self, now: float, raw_days: float, hourly_days: float) -> int:
        """Merge old windows into coarser ones (raw -> hourly -> daily); returns windows removed."""
        removed = 0
        for resolution, coarser, age_days, bucket in (("raw", "hour", raw_days, 3600.0),
                                                      ("hour", "day", hourly_days, 86400.0)):
            cutoff = now - age_days * 86400.0
            rows = self.query("SELECT id, model, version, variant, source, cohort, start_ts, profile FROM windows "
                              "WHERE resolution = ? AND end_ts <= ?", (resolution, cutoff))
            groups: dict[tuple[Any, ...], list[tuple[int, WindowProfile]]] = {}
            for wid, m, v, var, src, cohort, start, blob in rows:
                key = (m, v, var, src, cohort, int(start // bucket))
                prof = decode_envelope(bytes(blob), max_bytes=1 << 30, trusted=True).profiles[0]
                groups.setdefault(key, []).append((int(wid), prof))
            for members in (chunk for g in groups.values() for chunk in _within_count(g)):
                merged = merge_all(p for _, p in members)
                with self.transaction() as conn:
                    for wid, _ in members:
                        self._exec(conn, "DELETE FROM windows WHERE id = ?", (wid,))
                    self._insert_window(conn, merged, now, coarser)
                removed += len(members) - 1
        return removed


def _within_count(members: list[tuple[int, WindowProfile]]) -> Iterator[list[tuple[int, WindowProfile]]]:
    """Split a roll-up group so that no merged window holds more than ``MAX_COUNT`` rows."""
    chunk: list[tuple[int, WindowProfile]] = []
    rows = 0
    for m in members:
        if chunk and rows + m[1].rows > MAX_COUNT:
            yield chunk
            chunk, rows = [], 0
        chunk.append(m)
        rows += m[1].rows
    if chunk:
        yield chunk
