"""The durable outbox of retraining requests, in the service's store (SQLite or PostgreSQL, same SQL).

A request is committed here before any delivery attempt, so a crash or restart loses nothing: the
sender picks pending rows up again. Tables (declared here, where their SQL lives, and created
when an :class:`Outbox` is built on a store): ``outbox`` (one row per request and target; ``dedup_key`` unique) and ``retrain_state`` (the time of
each model's last request, for the cooldown).

Concurrency: :meth:`Outbox.enqueue` claims the model's cooldown with one conditional upsert, so two
triggers (Alertmanager and the embedded policy, or two replicas on PostgreSQL) cannot both start a
retraining; :meth:`Outbox.claim_one` leases a row with a compare-and-set on ``next_attempt_at``, and
:meth:`Outbox.renew` extends that lease the same way right before a post, so two senders never post
the same row at the same time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..store import Store

__all__ = ["SCHEMA", "EnqueueResult", "Outbox", "OutboxRow", "PendingRequest"]

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS outbox (
        id {serial}, dedup_key TEXT NOT NULL UNIQUE, model TEXT NOT NULL, target TEXT NOT NULL,
        url TEXT NOT NULL, body TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        next_attempt_at DOUBLE PRECISION NOT NULL, attempts INTEGER NOT NULL, status TEXT NOT NULL,
        last_error TEXT, delivered_at DOUBLE PRECISION)""",
    """CREATE TABLE IF NOT EXISTS retrain_state (
        model TEXT PRIMARY KEY, last_request_at DOUBLE PRECISION NOT NULL)""",
]


@dataclass(frozen=True)
class PendingRequest:
    """One request for one target, ready to be written."""

    dedup_key: str
    target: str
    url: str
    body: str


@dataclass(frozen=True)
class OutboxRow:
    """A pending request as read back for delivery."""

    id: int
    dedup_key: str
    model: str
    target: str
    url: str
    body: str
    created_at: float
    attempts: int
    leased_until: float = 0.0


@dataclass
class EnqueueResult:
    """Targets whose request was queued, was already queued (same episode), or fell in the cooldown."""

    queued: list[str] = field(default_factory=list)
    deduplicated: list[str] = field(default_factory=list)
    cooldown: list[str] = field(default_factory=list)


class Outbox:
    """SQL over the ``outbox`` and ``retrain_state`` tables (created here if missing); no HTTP, no clock."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.create_tables(SCHEMA)

    def enqueue(self, model: str, requests: Sequence[PendingRequest], now: float,
                cooldown_seconds: float) -> EnqueueResult:
        """Write ``requests`` in one transaction, unless the episode is known or the model is cooling down."""
        res = EnqueueResult()
        if not requests:
            return res
        with self.store.transaction() as conn:
            marks = ", ".join("?" for _ in requests)
            known = {str(k) for (k,) in conn.execute(
                f"SELECT dedup_key FROM outbox WHERE dedup_key IN ({marks})",
                [r.dedup_key for r in requests]).fetchall()}
            fresh = [r for r in requests if r.dedup_key not in known]
            res.deduplicated = [r.target for r in requests if r.dedup_key in known]
            if not fresh:
                return res
            if not known:  # a new episode: claim the model's cooldown, atomically
                cur = conn.execute(
                    "INSERT INTO retrain_state (model, last_request_at) VALUES (?, ?) "
                    "ON CONFLICT (model) DO UPDATE SET last_request_at = excluded.last_request_at "
                    "WHERE retrain_state.last_request_at <= ?", (model, now, now - cooldown_seconds))
                if cur.rowcount == 0:
                    res.cooldown = [r.target for r in fresh]
                    return res
            for r in fresh:
                cur = conn.execute(
                    "INSERT INTO outbox (dedup_key, model, target, url, body, created_at, next_attempt_at, "
                    "attempts, status) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 'pending') ON CONFLICT (dedup_key) DO NOTHING",
                    (r.dedup_key, model, r.target, r.url, r.body, now, now))
                (res.queued if cur.rowcount else res.deduplicated).append(r.target)
        return res

    def claim_one(self, now: float, lease_seconds: float, exclude_targets: set[str] | frozenset[str] = frozenset(),
                  scan: int = 20) -> OutboxRow | None:
        """The earliest due pending row not for ``exclude_targets``, leased for ``lease_seconds``."""
        sql = ("SELECT id, dedup_key, model, target, url, body, created_at, attempts, next_attempt_at FROM outbox "
               "WHERE status = 'pending' AND next_attempt_at <= ?")
        params: list[Any] = [now]
        if exclude_targets:
            sql += f" AND target NOT IN ({', '.join('?' for _ in exclude_targets)})"
            params += sorted(exclude_targets)
        rows = self.store.query(sql + " ORDER BY next_attempt_at, id LIMIT ?", [*params, scan])
        for oid, key, model, target, url, body, created, attempts, due in rows:
            until = now + lease_seconds
            if self.lease(int(oid), float(due), until):
                return OutboxRow(int(oid), str(key), str(model), str(target), str(url), str(body), float(created),
                                 int(attempts), until)
        return None

    def lease(self, oid: int, seen_due: float, until: float) -> bool:
        """Compare-and-set: take row ``oid`` until ``until`` if it is still due at ``seen_due``."""
        return self.store.execute("UPDATE outbox SET next_attempt_at = ? WHERE id = ? AND status = 'pending' "
                                  "AND next_attempt_at = ?", (until, oid, seen_due)) == 1

    def renew(self, row: OutboxRow, until: float) -> OutboxRow | None:
        """Extend our lease on ``row`` (compare-and-set on the lease we hold); None if it is no longer ours."""
        return replace(row, leased_until=until) if self.lease(row.id, row.leased_until, until) else None

    def delivered(self, oid: int, attempts: int, now: float) -> None:
        self.store.execute("UPDATE outbox SET status = 'delivered', attempts = ?, delivered_at = ?, last_error = NULL "
                           "WHERE id = ?", (attempts, now, oid))

    def retry(self, oid: int, attempts: int, next_attempt_at: float, error: str) -> None:
        self.store.execute("UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?",
                           (attempts, next_attempt_at, error[:500], oid))

    def given_up(self, oid: int, attempts: int, error: str) -> None:
        self.store.execute("UPDATE outbox SET status = 'given_up', attempts = ?, last_error = ? WHERE id = ?",
                           (attempts, error[:500], oid))

    def stats(self, now: float) -> tuple[int, float]:
        """Pending requests and the age of the oldest one (0 when none)."""
        n, oldest = self.store.query("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE status = 'pending'")[0]
        return int(n), (max(0.0, now - float(oldest)) if oldest is not None else 0.0)

    def next_due(self) -> float | None:
        """When the earliest pending row is due (for the sender's sleep)."""
        (due,) = self.store.query("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'")[0]
        return None if due is None else float(due)

    def pairs(self) -> set[tuple[str, str]]:
        """Every (model, target) the outbox has seen, so counters start at zero after a restart."""
        return {(str(m), str(t)) for m, t in self.store.query("SELECT DISTINCT model, target FROM outbox")}

    def rows(self, model: str | None = None) -> list[dict[str, Any]]:
        """Rows for inspection (tests, operators), newest first."""
        sql = "SELECT id, model, target, status, attempts, last_error, created_at, delivered_at FROM outbox"
        params: tuple[Any, ...] = ()
        if model is not None:
            sql += " WHERE model = ?"
            params = (model,)
        cols = ("id", "model", "target", "status", "attempts", "last_error", "created_at", "delivered_at")
        return [dict(zip(cols, r, strict=True)) for r in self.store.query(sql + " ORDER BY id DESC", params)]
