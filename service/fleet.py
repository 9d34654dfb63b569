"""Fleet state that is true after a restart and across replicas: rebuilt from the store, produced once.

Two problems, one module:

* **Restarts.** What alerts and dashboards read about the fleet (newest window per model and cohort,
  rows and windows per stream, delivery lag, the ``driftline_edge_*`` device reports) used to live
  only in the process. :meth:`Fleet.refresh` rebuilds it from the store (the ``windows`` table and
  the ``device_reports`` table this module owns) at start and on every evaluation pass, merging with
  what this process counted since (maxima, so a counter never goes down).
* **Replicas.** Every replica stores what it ingests in the shared PostgreSQL, but only the
  :class:`Leadership` holder (a PostgreSQL session advisory lock) evaluates and exposes fleet
  state; the others expose only their own per-process counters (envelopes, bytes, requests), which
  ``sum`` adds correctly. SQLite is single-replica: its one process is always the leader.

Device reports carry a sidecar's start time (``started_at``), so its CPU counter is accumulated over
restarts (``cpu_base`` + the current life's newest value) instead of falling back to zero.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from .parts import IngestStats
from .store import Store

__all__ = ["DeviceLife", "Fleet", "LeaderCollector", "Leadership", "merge_life"]

log = logging.getLogger("driftline.service.fleet")

# pg_try_advisory_lock key: "drftline" as a signed 64-bit integer (one lock per database).
LEADER_LOCK_KEY = int.from_bytes(b"drftline", "big", signed=True)

DEVICE_DDL = """CREATE TABLE IF NOT EXISTS device_reports (
    model TEXT NOT NULL, source TEXT NOT NULL, seen DOUBLE PRECISION NOT NULL, cohort TEXT NOT NULL,
    report TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL, cpu_base DOUBLE PRECISION NOT NULL,
    cpu_last DOUBLE PRECISION NOT NULL, PRIMARY KEY (model, source))"""

# One statement on both engines: a newer life folds the previous life's CPU into cpu_base; the same
# life keeps the larger CPU value; an older life (a late report) changes nothing but is not an error.
DEVICE_UPSERT = """INSERT INTO device_reports (model, source, seen, cohort, report, started_at, cpu_base, cpu_last)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (model, source) DO UPDATE SET
  cpu_base = CASE WHEN excluded.started_at > device_reports.started_at
                  THEN device_reports.cpu_base + device_reports.cpu_last + excluded.cpu_base
                  ELSE device_reports.cpu_base END,
  cpu_last = CASE WHEN excluded.started_at > device_reports.started_at THEN excluded.cpu_last
                  WHEN excluded.started_at = device_reports.started_at AND excluded.cpu_last > device_reports.cpu_last
                  THEN excluded.cpu_last ELSE device_reports.cpu_last END,
  started_at = CASE WHEN excluded.started_at > device_reports.started_at THEN excluded.started_at
                    ELSE device_reports.started_at END,
  report = CASE WHEN excluded.seen >= device_reports.seen THEN excluded.report ELSE device_reports.report END,
  cohort = CASE WHEN excluded.seen >= device_reports.seen THEN excluded.cohort ELSE device_reports.cohort END,
  seen = CASE WHEN excluded.seen >= device_reports.seen THEN excluded.seen ELSE device_reports.seen END"""


@dataclass(frozen=True, slots=True)
class DeviceLife:
    """CPU accounting of one device: finished lives' CPU (``cpu_base``) plus the current life's newest value."""

    started_at: float
    cpu_base: float
    cpu_last: float

    @property
    def total(self) -> float:
        return self.cpu_base + self.cpu_last


def merge_life(old: DeviceLife | None, new: DeviceLife) -> DeviceLife:
    """The same rule as :data:`DEVICE_UPSERT`, for the copy a process keeps between store refreshes."""
    if old is None:
        return new
    if new.started_at > old.started_at:
        return DeviceLife(new.started_at, old.cpu_base + old.cpu_last + new.cpu_base, new.cpu_last)
    if new.started_at == old.started_at:
        return replace(old, cpu_last=max(old.cpu_last, new.cpu_last))
    return old


def _num(v: Any, default: float = 0.0) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


class Leadership:
    """Whether this process produces fleet state; a PostgreSQL advisory lock held on its own session.

    ``check()`` is cheap and safe to call every pass: it keeps the lock while its session lives and
    tries to take it otherwise (a crashed leader's session ends and the lock with it).
    """

    def __init__(self, url: str, key: int = LEADER_LOCK_KEY) -> None:
        self.url = url
        self.key = key
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        self._conn: Any = None
        self._held = not self.postgres
        self._lock = threading.Lock()

    @property
    def is_leader(self) -> bool:
        return self._held

    def check(self) -> bool:
        if not self.postgres:
            return True
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    import psycopg

                    self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                                                 keepalives=1, keepalives_idle=10, keepalives_interval=5,
                                                 keepalives_count=3)
                    self._held = False
                if self._held:
                    self._conn.execute("SELECT 1")
                else:
                    row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                    self._held = bool(row and row[0])
                    if self._held:
                        log.info("this replica is now the leader (evaluates and exposes fleet state)")
            except Exception as exc:  # noqa: BLE001 - a lost session is a lost lock, never a crash
                if self._held:
                    log.warning("lost the leader lock: %s", exc)
                self._held = False
                self._close()
            return self._held

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - closing a broken session
                pass
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._held = not self.postgres
            self._close()


class Fleet:
    """Device reports to the store (every replica), fleet state from the store (the leader)."""

    def __init__(self, store: Store, stats: IngestStats, leadership: Leadership) -> None:
        self.store = store
        self.stats = stats
        self.leadership = leadership
        self.ready = False  # fleet state has been read from the store since this process became leader
        self._pending: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        store.create_tables([DEVICE_DDL])
        stats.on_device = self._queue

    # ---- device reports -------------------------------------------------------------------------
    def _queue(self, model: str, source: str, report: dict[str, Any]) -> None:
        with self._lock:
            self._pending.setdefault((model, source), []).append(report)

    def flush(self) -> int:
        """Write the device reports queued since the last flush (one transaction); returns how many.

        Rows go in one order (model, source, life) in every replica, so two replicas flushing the same
        devices at once wait for each other instead of deadlocking; a flush that fails puts its reports
        back (only the newest of each life, so an outage keeps one report per device life), and the
        next flush writes them.
        """
        with self._lock:
            pending, self._pending = self._pending, {}
        rows, newest = [], {}
        for (model, source), reports in pending.items():
            lives: dict[float, dict[str, Any]] = {}
            for r in reports:  # one row per life seen, the newest report of each
                started = _num(r.get("started_at"))
                if started not in lives or r["seen"] >= lives[started]["seen"]:  # _cpu: a report put back
                    lives[started] = {**r, "_cpu": max(_num(r.get("cpu_seconds")), _num(r.get("_cpu")),
                                                       lives.get(started, {}).get("_cpu", 0.0))}
            newest[(model, source)] = list(lives.values())
            for started in sorted(lives):
                r = lives[started]
                report = {k: v for k, v in r.items() if k not in ("seen", "cohort", "_cpu", "cpu_base")}
                rows.append((model, source, r["seen"], json.dumps(r["cohort"], sort_keys=True),
                             json.dumps(report, sort_keys=True), started, 0.0, r["_cpu"]))
        if not rows:
            return 0
        rows.sort(key=lambda row: (row[0], row[1], row[5]))
        try:
            with self.store.transaction() as conn:
                for row in rows:
                    conn.execute(DEVICE_UPSERT, row)
        except Exception:
            with self._lock:  # reports queued meanwhile are newer: they go after these
                for key, kept in newest.items():
                    self._pending[key] = kept + self._pending.get(key, [])
            raise
        return len(rows)

    # ---- fleet state ----------------------------------------------------------------------------
    def refresh(self, now: float | None = None) -> bool:
        """Flush this replica's device reports; if leader, rebuild fleet state from the store.

        Returns whether this process is the leader. Values only grow (maxima with what the process
        counted meanwhile), so no counter goes down when another replica's rows arrive.
        """
        self.flush()
        if not self.leadership.check():
            self.ready = False
            return False
        now = time.time() if now is None else now
        streams = self.store.query(
            "SELECT model, version, variant, SUM(rows_observed), COUNT(*), MAX(end_ts) FROM windows "
            "GROUP BY model, version, variant")
        cohorts = self.store.query("SELECT model, cohort, SUM(rows_observed), MAX(end_ts) FROM windows "
                                   "WHERE cohort <> '{}' GROUP BY model, cohort")
        lag = self.store.query(
            "SELECT w.model, w.received_at - w.end_ts FROM windows w JOIN "
            "(SELECT model, MAX(id) AS id FROM windows WHERE resolution = 'raw' GROUP BY model) n ON w.id = n.id")
        devices = self.store.query("SELECT model, source, seen, cohort, report, started_at, cpu_base, cpu_last "
                                   "FROM device_reports")
        s = self.stats
        with s.lock:
            for model, version, variant, rows, n, last in streams:
                k = (model, version, variant)
                s.observations[k] = max(s.observations.get(k, 0), int(rows))
                s.windows[k] = max(s.windows.get(k, 0), int(n))
                s.last_end[(model, version)] = max(s.last_end.get((model, version), 0.0), float(last))
            rows_by: dict[tuple[str, str, str], int] = {}
            end_by: dict[tuple[str, str, str], float] = {}
            for model, cohort, rows, last in cohorts:
                for label, value in json.loads(cohort).items():
                    ck = (model, label, value)
                    rows_by[ck] = rows_by.get(ck, 0) + int(rows)
                    end_by[ck] = max(end_by.get(ck, 0.0), float(last))
            for ck, rows in rows_by.items():
                s.cohort_rows[ck] = max(s.cohort_rows.get(ck, 0), rows)
                s.cohort_last_end[ck] = max(s.cohort_last_end.get(ck, 0.0), end_by[ck])
            for model, value in lag:  # the newest stored window, whichever replica took it
                s.lag[model] = max(float(value), 0.0)
            for model, source, seen, cohort, report, started, base, cpu in devices:
                stored = {**json.loads(report), "seen": float(seen), "cohort": json.loads(cohort)}
                life = DeviceLife(float(started), float(base), float(cpu))
                mine = s.devices.get(model, {}).get(source)
                mine_life = s.lives.get((model, source))
                if mine_life is not None:  # a report this process took after the flush above
                    life = merge_life(life, replace(mine_life, cpu_base=0.0))
                if mine is not None and mine["seen"] > stored["seen"]:
                    stored = mine
                s.devices.setdefault(model, {})[source] = stored
                s.lives[(model, source)] = life
        self.ready = True
        return True

    def exposes(self) -> bool:
        """Whether the collectors should expose fleet state from this process now."""
        return self.leadership.is_leader and self.ready


class LeaderCollector:
    """``driftline_leader``: 1 on the replica that evaluates and exposes fleet state, 0 on the others."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self) -> Any:
        g = GaugeMetricFamily("driftline_leader", "1 when this replica evaluates and exposes fleet state")
        g.add_metric([], 1.0 if self.fleet.exposes() else 0.0)
        yield g
