"""The dispatcher: turns retraining triggers into outbox rows, and sender threads deliver them.

Senders: ``retrain.senders`` threads; each claims one due row at a time, never for a target another
sender of this process is posting to, so one slow target holds at most one sender and the others keep
delivering. Each attempt has a deadline for the whole of it (``timeout_seconds``, see ``sender.py``),
shorter than the row's lease; the lease is renewed just before posting, so a row whose lease lapsed
(a stalled process) is not posted twice: the renewal fails and the sender leaves it to its new owner.

Delivery: a 2xx acknowledges a request; anything else (an HTTP error, a timeout, a refused
connection, a redirect) is retried with exponential backoff and jitter (each delay uniform in
[step/2, step]), capped at ``backoff_max_seconds``, until ``deadline_seconds`` after the request was
queued; then it is given up, counted (``driftline_retrain_requests_total{result="given_up"}``) and
logged at error level.
Counters are kept per (model, target, result) and start at zero for every pair the outbox knows, so
``increase()`` in the alert rules sees the first give-up.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from ..settings import RetrainSettings, RetrainTarget
from ..store import Store
from .outbox import Outbox, OutboxRow, PendingRequest
from .policy import RetrainPolicy
from .request import build_request
from .sender import DeadlineSender
from .templates import headers, render_payload

__all__ = ["RESULTS", "Dispatcher"]

log = logging.getLogger("driftline.service.retrain")

RESULTS = ("delivered", "retried", "given_up", "deduplicated", "cooldown")


class Dispatcher:
    """Owns the outbox: :meth:`request` enqueues (transactional, de-duplicated), a thread delivers."""

    def __init__(self, store: Store, settings: RetrainSettings, *, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        self.policy = RetrainPolicy.from_settings(settings)
        self.outbox = Outbox(store)
        self.clock = clock
        self.results: Counter[tuple[str, str, str]] = Counter()
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._in_flight: set[str] = set()  # targets a sender of this process is posting to
        self._sender = DeadlineSender(max_connections=2 * settings.senders)
        self._episodes: dict[str, None] = {}  # embedded episodes already handled by this process
        self.on_delivery: Callable[[str, bool, float], None] | None = None  # (target, ok, seconds): a histogram
        self._zero(self.outbox.pairs())

    # ---- counting ------------------------------------------------------------------------------
    def _zero(self, pairs: Iterable[tuple[str, str]]) -> None:
        with self._lock:
            for model, target in pairs:
                for result in RESULTS:
                    self.results.setdefault((model, target, result), 0)

    def _count(self, model: str, target: str, result: str, n: int = 1) -> None:
        self._zero([(model, target)])
        with self._lock:
            self.results[(model, target, result)] += n

    def first_sight(self, episode: str) -> bool:
        """True the first time this process sees ``episode`` (bounded memory, oldest forgotten first)."""
        with self._lock:
            if episode in self._episodes:
                return False
            self._episodes[episode] = None
            while len(self._episodes) > 10_000:
                del self._episodes[next(iter(self._episodes))]
            return True

    def forget(self, episode: str) -> None:
        """Undo :meth:`first_sight` for ``episode`` (its request could not be queued)."""
        with self._lock:
            self._episodes.pop(episode, None)

    def targets_for(self, model: str) -> list[RetrainTarget]:
        return [t for t in self.settings.targets if not t.models or model in t.models]

    # ---- enqueue -----------------------------------------------------------------------------------
    def request(self, model: str, version: str, reason: str, episode: str, details: dict[str, Any],
                trigger: dict[str, Any] | None = None, now: float | None = None) -> int:
        """Queue one request per target for ``episode``; returns how many were queued (0: dedup/cooldown).

        ``now`` is the time of the evidence (the evaluation's time on the embedded path); it defaults to
        the dispatcher's clock.
        """
        now = self.clock() if now is None else now
        pending = []
        for t in self.targets_for(model):
            key = self.policy.idempotency_key(episode, t.name)
            req = build_request(key, model, version, reason, trigger or {"source": "api"}, now, details)
            pending.append(PendingRequest(key, t.name, t.url, json.dumps(render_payload(t, req), sort_keys=True)))
        res = self.outbox.enqueue(model, pending, now, self.policy.cooldown_seconds)
        for name in res.deduplicated:
            self._count(model, name, "deduplicated")
        for name in res.cooldown:
            self._count(model, name, "cooldown")
        self._zero((model, name) for name in res.queued)
        if res.queued:
            log.info("retraining requested for %s %s (%s) to %s", model, version, reason, ", ".join(res.queued))
            self._wake.set()
        elif res.cooldown:
            log.info("retraining for %s %s not requested: model in cooldown (%s)", model, version, reason)
        return len(res.queued)

    # ---- deliver --------------------------------------------------------------------------------------
    def outbox_stats(self) -> tuple[int, float]:
        """Pending requests and the oldest one's age, read at scrape time."""
        return self.outbox.stats(self.clock())

    def lease_seconds(self) -> float:
        """How long a claimed row stays ours: the attempt's deadline plus room for the bookkeeping."""
        return self.settings.timeout_seconds + 30.0

    def deliver_due(self) -> int:
        """Deliver every due request now, one at a time (tests, tools); returns how many were acknowledged."""
        delivered = 0
        while not self._stop.is_set():
            row = self._claim()
            if row is None:
                return delivered
            try:
                delivered += self._attempt(row)
            finally:
                self._release(row)
        return delivered

    def _claim(self) -> OutboxRow | None:
        with self._lock:
            busy = set(self._in_flight)
        row = self.outbox.claim_one(self.clock(), self.lease_seconds(), exclude_targets=busy)
        if row is not None:
            with self._lock:
                self._in_flight.add(row.target)
        return row

    def _release(self, row: OutboxRow) -> None:
        with self._lock:
            self._in_flight.discard(row.target)

    def _attempt(self, row: OutboxRow) -> bool:
        target = next((t for t in self.settings.targets if t.name == row.target), None)
        body = row.body.encode()
        ts = str(int(self.clock()))
        secret = self.settings.secret.get_secret_value() if self.settings.secret is not None else ""
        hdrs = headers(target, body, secret, ts, row.dedup_key)
        if self.outbox.renew(row, self.clock() + self.lease_seconds()) is None:
            log.warning("retraining request %s: lease lost before posting; left to its new owner", row.id)
            return False
        t0 = time.perf_counter()
        error = self._sender.post(row.url, body, hdrs, self.settings.timeout_seconds)
        if self.on_delivery is not None:
            self.on_delivery(row.target, error is None, time.perf_counter() - t0)
        attempts = row.attempts + 1
        now = self.clock()
        if error is None:
            self.outbox.delivered(row.id, attempts, now)
            self._count(row.model, row.target, "delivered")
            log.info("retraining request %s for %s delivered to %s (attempt %d)", row.id, row.model, row.target,
                     attempts)
            return True
        deadline = row.created_at + self.settings.deadline_seconds
        if now >= deadline:
            self.outbox.given_up(row.id, attempts, error)
            self._count(row.model, row.target, "given_up")
            log.error("gave up retraining request %s for %s to %s after %d attempts over %.0fs: %s",
                      row.id, row.model, row.target, attempts, now - row.created_at, error)
            return False
        delay = self.backoff(attempts)
        self.outbox.retry(row.id, attempts, min(now + delay, deadline), error)
        self._count(row.model, row.target, "retried")
        log.warning("retraining request %s for %s to %s failed (%s); retry in %.1fs", row.id, row.model, row.target,
                    error, delay)
        return False

    def backoff(self, attempts: int) -> float:
        """Exponential backoff with jitter: uniform in [cap/2, cap], cap = initial * 2^(attempts-1)."""
        cap = min(self.settings.backoff_max_seconds,
                  self.settings.backoff_initial_seconds * 2 ** min(attempts - 1, 60))
        return cap * (0.5 + 0.5 * self._rng.random())

    # ---- the sender threads ---------------------------------------------------------------------------
    def start(self) -> Dispatcher:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._run, name=f"driftline-retrain-sender-{i}", daemon=True)
                         for i in range(self.settings.senders)]
        for t in self._threads:
            t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                row = self._claim()
            except Exception:
                log.exception("retraining sender could not claim a request")
                row = None
            if row is not None:
                try:
                    self._attempt(row)
                except Exception:
                    log.exception("retraining sender pass failed")
                finally:
                    self._release(row)
                continue
            try:
                due = self.outbox.next_due()
            except Exception:
                due = None
            wait = 1.0 if due is None else min(1.0, max(0.02, due - self.clock()))
            self._wake.wait(wait)
            self._wake.clear()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the senders; an attempt in flight ends by its deadline (``timeout_seconds``)."""
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=max(timeout, self.settings.timeout_seconds + 1.0))
        self._threads = []
        self._sender.close()
