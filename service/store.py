"""The durable store: SQLite (embedded default) or PostgreSQL (several replicas), one code path.

Plain SQL that both engines accept; the only differences (placeholders, auto-increment, binary type)
are confined to :class:`Dialect`. SQLite: one connection guarded by a lock; PostgreSQL: a pool that
survives server restarts. Every write that must be atomic runs in :meth:`Store.transaction`, whose
:class:`Tx` takes statements in ``?`` form on either engine (the public execution API other modules
use, with :meth:`Store.query`, :meth:`Store.execute` and :meth:`Store.create_tables`); every write's
outcome feeds :class:`StoreHealth`.

Tables: ``envelopes`` (ids already merged: the exactly-once ledger), ``windows`` (one row per
stream, cohort, device and window, the profile as wire bytes), ``refs`` (reference profiles per model
version), ``canaries`` (each model's canary defaults), ``canary_experiments`` (one per rollout, keyed by
model and the rollout's identity, with its sticky decision), ``canary_events`` (each gate call),
and ``probes`` (one heartbeat row per process: the write that readiness and liveness check). Each
other table is declared by the module that owns its SQL: ``catalog`` in :mod:`.limits`, ``outbox``
and ``retrain_state`` in :mod:`.retrain.outbox`, ``device_reports`` in :mod:`.fleet`.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from driftline.errors import WireFormatError
from driftline.profile import WindowProfile, merge_all
from driftline.wire import Envelope, decode_profile, encode_profile
from driftline.wirecheck import MAX_COUNT

from .errors import ServiceError, StoreError, Unprocessable
from .limits import Caps, Catalog
from .merging import compatible_groups

__all__ = ["SQLITE_PAGE_SIZE", "Dialect", "ExperimentRow", "IngestResult", "Store", "StoreHealth", "Tx", "WindowRow"]


@dataclass(frozen=True)
class Dialect:
    """What differs between the engines: placeholders, the auto-increment key and the binary type."""

    name: str  # "sqlite" | "postgresql"

    @property
    def postgres(self) -> bool:
        return self.name == "postgresql"

    @property
    def blob(self) -> str:
        return "BYTEA" if self.postgres else "BLOB"

    @property
    def serial(self) -> str:
        return "BIGSERIAL PRIMARY KEY" if self.postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"

    def sql(self, text: str) -> str:
        """``?`` placeholders (the one spelling every module writes) in this engine's form."""
        return text.replace("?", "%s") if self.postgres else text

    def ddl(self, text: str) -> str:
        """A ``CREATE`` statement with ``{serial}`` and ``{blob}`` filled in for this engine."""
        return text.format(serial=self.serial, blob=self.blob)


class Tx:
    """One open transaction (or one statement's connection): statements in ``?`` form, any engine."""

    def __init__(self, conn: Any, dialect: Dialect) -> None:
        self._conn = conn
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; the cursor has ``rowcount``, ``fetchone`` and ``fetchall``."""
        return self._conn.execute(self.dialect.sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement for many parameter rows: SQLite's C loop, PostgreSQL's pipeline (one round trip
        for the lot instead of one per row)."""
        if not rows:
            return
        if self.dialect.postgres:
            with self._conn.cursor() as cur:
                cur.executemany(self.dialect.sql(sql), [tuple(r) for r in rows])
        else:
            self._conn.executemany(self.dialect.sql(sql), [tuple(r) for r in rows])


SCHEMA = [  # the tables whose SQL lives here; other modules declare theirs (Store.create_tables)
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
    """CREATE TABLE IF NOT EXISTS canary_experiments (
        model TEXT NOT NULL, rollout TEXT NOT NULL, controller TEXT NOT NULL, config TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, decision TEXT, decided_at DOUBLE PRECISION, result TEXT,
        PRIMARY KEY (model, rollout))""",
    """CREATE TABLE IF NOT EXISTS canary_events (
        id {serial}, model TEXT NOT NULL, rollout TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, gate TEXT NOT NULL,
        phase TEXT NOT NULL, verdict TEXT NOT NULL, baseline_rows BIGINT NOT NULL, canary_rows BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS canary_events_by_rollout ON canary_events (model, rollout, id)",
    "CREATE TABLE IF NOT EXISTS probes (name TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL)",
]


@dataclass(frozen=True)
class IngestResult:
    """What happened to one envelope."""

    envelope_id: str
    result: str  # "accepted" | "duplicate" | "limited" (a name past a cap: nothing stored)
    windows: int
    reason: str | None = None


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


@dataclass(frozen=True)
class ExperimentRow:
    """One stored canary experiment: a rollout of a model, its config, start and (sticky) decision."""

    model: str
    rollout: str
    controller: str
    config: dict[str, Any]
    started_at: float
    decision: str | None
    decided_at: float | None
    result: dict[str, Any] | None


_EXP_COLS = "model, rollout, controller, config, started_at, decision, decided_at, result"


def _experiment(row: Sequence[Any]) -> ExperimentRow:
    m, r, ctl, cfg, started, decision, decided, result = row
    return ExperimentRow(str(m), str(r), str(ctl), json.loads(cfg), float(started),
                         None if decision is None else str(decision), None if decided is None else float(decided),
                         None if result is None else json.loads(result))


class StoreHealth:
    """Whether the store can write, from every write and probe: read by ``/healthz`` and ``/readyz``."""

    def __init__(self, now: float | None = None) -> None:
        self._lock = threading.Lock()
        self.last_ok = time.time() if now is None else now
        self.failing_since: float | None = None
        self.last_error: str | None = None

    def ok(self, now: float | None = None) -> None:
        with self._lock:
            self.last_ok = time.time() if now is None else now
            self.failing_since = None
            self.last_error = None

    def failed(self, error: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            if self.failing_since is None:
                self.failing_since = now
            self.last_error = error

    def failing_for(self, now: float | None = None) -> float:
        """Seconds of unbroken write failures (0 while writes succeed)."""
        now = time.time() if now is None else now
        with self._lock:
            return 0.0 if self.failing_since is None else max(0.0, now - self.failing_since)


_INSERT_WINDOW = ("INSERT INTO windows (model, version, variant, source, cohort, start_ts, end_ts, rows_observed, "
                  "received_at, resolution, profile) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_IDS_PER_STATEMENT = 500
"""Envelope ids inserted by one statement: 2,000 parameters, far below SQLite's (32,766) and
PostgreSQL's (65,535) limits."""

SQLITE_PAGE_SIZE = 16384
"""Page size of a new SQLite database (SQLite's default is 4096). Measured inserting 5,000 rows of
48 KB blobs in batches of 500 (WAL, synchronous=NORMAL): ~150 us of CPU per row at 4 KiB, ~80 us at
16 KiB; 32 KiB gains little more, and small rows (ids, names) waste more of each page."""

STORED_MAX_BYTES = 1 << 30  # a rolled-up window of this service's own making: no wire cap applies


def _stored(blob: Any) -> WindowProfile:
    """A profile blob this service wrote (bounds were checked on the way in): decoded trusted."""
    return decode_profile(bytes(blob), max_bytes=STORED_MAX_BYTES, trusted=True)


def _cause(exc: BaseException) -> str:
    """The error's own words, with a hint for the one SQLite reports tersely."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
        text += " (the SQLite database's disk or max_page_count is full: free space or move the database)"
    return text


_DDL_LOCK_KEY = 0x447269667464  # pg_advisory_xact_lock key of the schema creation ("Driftd")

# SQLSTATE classes of a database that cannot write at all: 08 connection, 53 insufficient resources
# (53100 disk full, 53200 out of memory, 53300 too many connections), 57 operator intervention
# (shutdown, crash recovery), 58 system error (I/O).
_OUTAGE_SQLSTATE_CLASSES = ("08", "53", "57", "58")


def is_outage(exc: BaseException) -> bool:
    """Whether a database error means the store as a whole cannot write now (not this record's fault).

    PostgreSQL: the SQLSTATE class, or a psycopg connection-level error without one. SQLite: a full
    disk (SQLITE_FULL), an I/O error, or a database it cannot open.
    """
    if isinstance(exc, StoreError):
        return exc.outage
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return any(w in text for w in ("full", "disk i/o", "unable to open"))
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and state:
        return state[:2] in _OUTAGE_SQLSTATE_CLASSES
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolTimeout)


class Store:
    """SQLite or PostgreSQL behind the same methods; ``url`` is ``sqlite:///path`` or ``postgresql://...``.

    SQLite: one connection guarded by a lock. PostgreSQL: a connection pool (psycopg_pool) that checks
    each connection before handing it out and reconnects in the background, so a server restart costs
    the requests made while it is down (503) and nothing after it is back.
    """

    def __init__(self, url: str, *, pool_size: int = 8, timeout_seconds: float = 5.0, caps: Caps | None = None) -> None:
        self.url = url
        self.health = StoreHealth()
        self._lock = threading.RLock()
        self._pool: Any = None
        self._conn: Any = None
        self.probe_name = f"{socket.gethostname()}:{os.getpid()}"
        try:
            if url.startswith("sqlite://"):
                path = url[len("sqlite:///"):] or ":memory:"
                self.dialect = Dialect("sqlite")
                self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
                # 16 KiB pages (a new database only; an existing one keeps its own): a window blob of
                # ~48 KB spans 3 overflow pages instead of 12, which halves SQLite's CPU per stored
                # window (WAL frames, checksums, checkpoint copies are per page)
                self._conn.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            elif url.startswith(("postgresql://", "postgres://")):
                from psycopg_pool import ConnectionPool

                self.dialect = Dialect("postgresql")
                self._pool = ConnectionPool(
                    url, min_size=1, max_size=pool_size, open=True, name="driftline",
                    kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout_seconds))},
                    check=ConnectionPool.check_connection, timeout=timeout_seconds,
                    # give up a reconnection run early: the next request starts a fresh one at once,
                    # so the pool serves again within about a second of the server's return
                    reconnect_timeout=max(1.0, timeout_seconds / 2))
                self._pool.wait(timeout=max(timeout_seconds, 10.0))
            else:
                raise StoreError(f"unsupported database_url {url!r}: use sqlite:///PATH or postgresql://...")
            self.create_tables(SCHEMA)
            if self._pool is not None:
                self._store_blobs_uncompressed()
            self.catalog = Catalog(self, caps or Caps())
        except StoreError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise StoreError(f"cannot open the store {url.split('@')[-1]}: {_cause(exc)}") from exc

    @property
    def engine(self) -> str:
        """``"sqlite"`` or ``"postgresql"`` (what ``/readyz`` reports)."""
        return self.dialect.name

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
            if self._conn is not None:
                self._conn.close()

    # ---- plumbing --------------------------------------------------------------------------------
    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """A connection for one statement or transaction: the SQLite one (locked) or one from the pool."""
        if self._pool is None:
            with self._lock:
                yield self._conn
        else:
            with self._pool.connection() as conn:
                yield conn

    def _store_blobs_uncompressed(self) -> None:
        """PostgreSQL: window blobs are kept out of line without pglz (``STORAGE EXTERNAL``).

        Envelope bodies are zlib-compressed only when that saves a quarter (driftline/wire.py), so a
        blob of float64 sketches arrives plain; the default (``EXTENDED``) makes the server try pglz
        on every such 48 KB blob, which costs its CPU for ~10% at best. Checked first, so replicas
        that start later take no lock on the table; rows written before keep their storage.
        """
        rows = self.query("SELECT attstorage FROM pg_attribute WHERE attrelid = 'windows'::regclass "
                          "AND attname = 'profile'")
        if rows and str(rows[0][0]) != "e":
            self.execute("ALTER TABLE windows ALTER COLUMN profile SET STORAGE EXTERNAL")

    def create_tables(self, ddl: Sequence[str]) -> None:
        """Create the tables (and indexes) a module declares, if missing: ``{serial}``/``{blob}`` per engine.

        Each module that owns a table's SQL declares it (outbox, catalog, device reports) and calls this
        when it is built on a store.
        """
        try:
            with self._connection() as conn:
                if self._pool is None:
                    for text in ddl:
                        conn.execute(self.dialect.ddl(text))
                else:
                    # replicas starting together on a fresh database: concurrent CREATE ... IF NOT EXISTS
                    # can still collide in PostgreSQL's catalog (a unique violation on pg_type), so the
                    # DDL runs in one transaction under an advisory lock, one replica after the other
                    with conn.transaction():
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK_KEY,))
                        for text in ddl:
                            conn.execute(self.dialect.ddl(text))
        except Exception as exc:
            raise StoreError(f"cannot create tables: {_cause(exc)}") from exc

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One atomic unit. A database error becomes a :class:`StoreError` naming its real cause (never
        a failed ROLLBACK) and marks the store unhealthy; a commit marks it healthy."""
        try:
            with self._connection() as conn:
                if self._pool is not None:
                    with conn.transaction():
                        yield Tx(conn, self.dialect)
                else:
                    conn.execute("BEGIN")
                    try:
                        yield Tx(conn, self.dialect)
                        conn.execute("COMMIT")
                    except BaseException:
                        # SQLite rolls back by itself on some errors (SQLITE_FULL): a second ROLLBACK
                        # would fail with "cannot rollback - no transaction is active" and hide the cause.
                        if conn.in_transaction:
                            with suppress(sqlite3.Error):
                                conn.execute("ROLLBACK")
                        raise
        except ServiceError:
            raise
        except Exception as exc:
            self.health.failed(_cause(exc))
            raise StoreError(f"database write failed: {_cause(exc)}", outage=is_outage(exc)) from exc
        self.health.ok()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read (``?`` placeholders on either engine); a failure is a :class:`StoreError`."""
        try:
            with self._connection() as conn:
                return list(Tx(conn, self.dialect).execute(sql, params).fetchall())
        except Exception as exc:
            raise StoreError(f"database query failed: {_cause(exc)}") from exc

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write outside a transaction; returns the rows it changed and feeds :attr:`health`."""
        try:
            with self._connection() as conn:
                n = int(Tx(conn, self.dialect).execute(sql, params).rowcount)
        except Exception as exc:
            self.health.failed(_cause(exc))
            raise StoreError(f"database write failed: {_cause(exc)}", outage=is_outage(exc)) from exc
        self.health.ok()
        return n

    def probe_write(self, now: float | None = None) -> None:
        """Write this process's heartbeat row: proves the store takes writes (readiness, liveness)."""
        now = time.time() if now is None else now
        self.execute("INSERT INTO probes (name, at) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET at = excluded.at",
                     (self.probe_name, now))

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
        names: list[Any] = []
        admitted: set[Any] = set()  # names admitted by this transaction's earlier envelopes
        try:
            with self.transaction() as conn:
                fresh = self._record_ids(conn, items, now, transport)
                windows: list[tuple[Any, ...]] = []
                for env, raw in items:
                    if env.envelope_id not in fresh:  # known before, or an earlier copy in this batch
                        out.append(IngestResult(env.envelope_id, "duplicate", 0))
                        continue
                    fresh.discard(env.envelope_id)
                    refused, new = self.catalog.admit(conn, env.profiles, admitted)
                    if refused is not None:  # not merged: the same id may come back once the cap is raised
                        conn.execute("DELETE FROM envelopes WHERE envelope_id = ?", (env.envelope_id,))
                        out.append(IngestResult(env.envelope_id, "limited", 0, refused))
                        continue
                    names += new
                    admitted.update(new)
                    single = raw if raw is not None and len(env.profiles) == 1 else None
                    windows.extend(self._window_row(p, now, "raw", single) for p in env.profiles)
                    out.append(IngestResult(env.envelope_id, "accepted", len(env.profiles)))
                conn.executemany(_INSERT_WINDOW, windows)  # one statement for the batch's windows
        except StoreError as exc:
            raise StoreError(f"could not store {len(items)} envelope(s): {exc.message}", outage=exc.outage) from exc
        self.catalog.committed(names)
        return out

    def _record_ids(self, conn: Tx, items: Sequence[tuple[Envelope, bytes | None]], now: float,
                    transport: str) -> set[str]:
        """Insert the batch's envelope ids in a few statements; the ids that were new (the ledger's
        primary key decides: a known id, or a second copy within the batch, inserts nothing)."""
        fresh: set[str] = set()
        for i in range(0, len(items), _IDS_PER_STATEMENT):
            chunk = items[i:i + _IDS_PER_STATEMENT]
            sql = ("INSERT INTO envelopes (envelope_id, received_at, transport, producer) VALUES "
                   + ", ".join(["(?, ?, ?, ?)"] * len(chunk))
                   + " ON CONFLICT (envelope_id) DO NOTHING RETURNING envelope_id")
            params = [v for env, _ in chunk for v in (env.envelope_id, now, transport, json.dumps(env.producer))]
            fresh.update(str(r[0]) for r in conn.execute(sql, params).fetchall())
        return fresh

    @staticmethod
    def _window_row(p: WindowProfile, now: float, resolution: str, blob: bytes | None) -> tuple[Any, ...]:
        return (p.key.model, p.key.model_version, p.key.variant, p.key.source,
                json.dumps(p.key.cohort_dict, sort_keys=True), p.start, p.end, p.rows, now, resolution,
                encode_profile(p) if blob is None else blob)

    def _insert_window(self, conn: Tx, p: WindowProfile, now: float, resolution: str, blob: bytes | None = None) -> None:
        conn.execute(_INSERT_WINDOW, self._window_row(p, now, resolution, blob))

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
            try:
                prof = _stored(blob)
            except WireFormatError as exc:  # written by us, so the store is damaged: not the caller's fault
                raise StoreError(f"a stored window of model {m!r} version {v!r} cannot be decoded: {exc}") from exc
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
        blob = encode_profile(profile)
        with self.transaction() as conn:
            conn.execute("DELETE FROM refs WHERE model = ? AND version = ?", (model, version))
            conn.execute("INSERT INTO refs (model, version, source, created_at, profile) VALUES (?, ?, ?, ?, ?)",
                       (model, version, source, time.time(), blob))

    def reference(self, model: str, version: str) -> tuple[WindowProfile, str] | None:
        rows = self.query("SELECT profile, source FROM refs WHERE model = ? AND version = ?", (model, version))
        if not rows:
            return None
        return _stored(rows[0][0]), str(rows[0][1])

    def references(self) -> list[tuple[str, str, str]]:
        return [(str(a), str(b), str(c)) for a, b, c in self.query("SELECT model, version, source FROM refs")]

    def reference_details(self, model: str | None = None) -> list[dict[str, Any]]:
        """Every stored reference (of ``model``) with when it came and what it holds, newest first."""
        sql = "SELECT model, version, source, created_at, profile FROM refs"
        params: list[Any] = []
        if model is not None:
            sql += " WHERE model = ?"
            params.append(model)
        out = []
        for m, v, src, created, blob in self.query(sql + " ORDER BY created_at DESC", params):
            prof = _stored(blob)
            out.append({"model": str(m), "version": str(v), "source": str(src), "created_at": float(created),
                        "rows": prof.rows, "features": sorted(prof.features), "outputs": sorted(prof.outputs)})
        return out

    # ---- canaries ---------------------------------------------------------------------------------
    def put_canary(self, model: str, config: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM canaries WHERE model = ?", (model,))
            conn.execute("INSERT INTO canaries (model, config, created_at) VALUES (?, ?, ?)",
                       (model, json.dumps(config), time.time()))

    def canaries(self) -> dict[str, tuple[dict[str, Any], float]]:
        return {m: (json.loads(c), float(t)) for m, c, t in self.query("SELECT model, config, created_at FROM canaries")}

    def delete_canary(self, model: str) -> bool:
        """Forget a model's canary defaults, experiments and their history."""
        with self.transaction() as conn:
            n = conn.execute("DELETE FROM canaries WHERE model = ?", (model,)).rowcount
            n += conn.execute("DELETE FROM canary_experiments WHERE model = ?", (model,)).rowcount
            conn.execute("DELETE FROM canary_events WHERE model = ?", (model,))
        return n > 0

    # ---- canary experiments: one per rollout ---------------------------------------------------------
    def start_experiment(self, model: str, rollout: str, controller: str, config: dict[str, Any], now: float,
                         *, replace: bool = False, keep: int = 100) -> ExperimentRow:
        """The experiment of ``(model, rollout)``, started now with ``config`` if it is new.

        The insert is conditional, so two replicas that see a rollout's first gate call at once agree on
        one experiment (the first insert wins; both read it back). ``replace`` restarts it. Past ``keep``
        experiments of a model, the oldest are dropped with their history.
        """
        try:
            with self.transaction() as conn:
                if replace:
                    conn.execute("DELETE FROM canary_experiments WHERE model = ? AND rollout = ?", (model, rollout))
                    conn.execute("DELETE FROM canary_events WHERE model = ? AND rollout = ?", (model, rollout))
                cur = conn.execute("INSERT INTO canary_experiments (model, rollout, controller, config, started_at) "
                                 "VALUES (?, ?, ?, ?, ?) ON CONFLICT (model, rollout) DO NOTHING",
                                 (model, rollout, controller, json.dumps(config), now))
                if cur.rowcount:
                    old = conn.execute("SELECT rollout FROM canary_experiments WHERE model = ? "
                                     "ORDER BY started_at DESC, rollout", (model,)).fetchall()[keep:]
                    for (r,) in old:
                        conn.execute("DELETE FROM canary_experiments WHERE model = ? AND rollout = ?", (model, r))
                        conn.execute("DELETE FROM canary_events WHERE model = ? AND rollout = ?", (model, r))
                row = conn.execute(f"SELECT {_EXP_COLS} FROM canary_experiments WHERE model = ? AND rollout = ?",
                                 (model, rollout)).fetchone()
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"could not start the canary experiment: {exc}") from exc
        return _experiment(row)

    def experiment(self, model: str, rollout: str) -> ExperimentRow | None:
        rows = self.query(f"SELECT {_EXP_COLS} FROM canary_experiments WHERE model = ? AND rollout = ?", (model, rollout))
        return _experiment(rows[0]) if rows else None

    def experiments(self, model: str | None = None) -> list[ExperimentRow]:
        """Experiments, newest first (of one model, or of all)."""
        sql = f"SELECT {_EXP_COLS} FROM canary_experiments"
        params: tuple[Any, ...] = ()
        if model is not None:
            sql += " WHERE model = ?"
            params = (model,)
        return [_experiment(r) for r in self.query(sql + " ORDER BY started_at DESC, rollout", params)]

    def decide_experiment(self, model: str, rollout: str, decision: str, result: dict[str, Any],
                          now: float) -> ExperimentRow | None:
        """Record the first decision of an experiment; a later or concurrent one never overwrites it."""
        self.execute("UPDATE canary_experiments SET decision = ?, decided_at = ?, result = ? "
                     "WHERE model = ? AND rollout = ? AND decision IS NULL",
                     (decision, now, json.dumps(result), model, rollout))
        return self.experiment(model, rollout)

    def add_canary_event(self, model: str, rollout: str, at: float, gate: str, phase: str, verdict: str,
                         rows: dict[str, int], keep: int = 500) -> None:
        """Record one gate call; an experiment keeps its newest ``keep`` calls (a chatty client cannot fill the store)."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO canary_events (model, rollout, at, gate, phase, verdict, baseline_rows, "
                       "canary_rows) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (model, rollout, at, gate, phase, verdict, int(rows.get("baseline", 0)),
                        int(rows.get("canary", 0))))
            conn.execute("DELETE FROM canary_events WHERE model = ? AND rollout = ? AND id NOT IN (SELECT id FROM "
                       "canary_events WHERE model = ? AND rollout = ? ORDER BY id DESC LIMIT ?)",
                       (model, rollout, model, rollout, keep))

    def canary_events(self, model: str, rollout: str, limit: int = 200) -> list[dict[str, Any]]:
        """The newest ``limit`` gate calls of an experiment, oldest first."""
        rows = self.query("SELECT at, gate, phase, verdict, baseline_rows, canary_rows FROM canary_events "
                          "WHERE model = ? AND rollout = ? ORDER BY id DESC LIMIT ?", (model, rollout, limit))
        return [{"at": float(a), "gate": str(g), "phase": str(p), "verdict": str(v),
                 "rows": {"baseline": int(b), "canary": int(c)}} for a, g, p, v, b, c in reversed(rows)]

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
                prof = _stored(blob)
                groups.setdefault(key, []).append((int(wid), prof))
            for members in (chunk for g in groups.values() for chunk in _within_count(g)):
                # windows where a column changed type cannot merge: each compatible group becomes one window
                parts = compatible_groups([p for _, p in members])
                with self.transaction() as conn:
                    for wid, _ in members:
                        conn.execute("DELETE FROM windows WHERE id = ?", (wid,))
                    for idx in parts:
                        self._insert_window(conn, merge_all(members[i][1] for i in idx), now, coarser)
                removed += len(members) - len(parts)
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
