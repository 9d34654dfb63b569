"""The dispatcher: turns retraining triggers into outbox rows, and one sender thread delivers them.

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

import httpx

from ..settings import RetrainSettings, RetrainTarget
from ..store import Store
from .outbox import Outbox, OutboxRow, PendingRequest
from .policy import RetrainPolicy
from .request import build_request
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
        self._thread: threading.Thread | None = None
        self._episodes: dict[str, None] = {}  # embedded episodes already handled by this process
        self._zero(self.outbox.pairs())
        if settings.targets and settings.secret.get_secret_value() == "change-me":
            log.warning("retrain.secret is the default; receivers cannot trust the signatures: set "
                        "DRIFTLINE_RETRAIN__SECRET")

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

    def deliver_due(self, client: httpx.Client | None = None) -> int:
        """One pass over due requests; returns how many were acknowledged."""
        own = client is None
        client = client or httpx.Client(follow_redirects=False)
        try:
            lease = self.settings.timeout_seconds + 30.0
            rows = self.outbox.claim_due(self.clock(), lease)
            return sum(self._attempt(client, row) for row in rows if not self._stop.is_set())
        finally:
            if own:
                client.close()

    def _attempt(self, client: httpx.Client, row: OutboxRow) -> bool:
        target = next((t for t in self.settings.targets if t.name == row.target), None)
        body = row.body.encode()
        ts = str(int(self.clock()))
        hdrs = headers(target, body, self.settings.secret.get_secret_value(), ts, row.dedup_key)
        error = self._post(client, row.url, body, hdrs)
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

    def _post(self, client: httpx.Client, url: str, body: bytes, hdrs: dict[str, str]) -> str | None:
        try:
            resp = client.post(url, content=body, headers=hdrs, timeout=self.settings.timeout_seconds)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return None if 200 <= resp.status_code < 300 else f"HTTP {resp.status_code}"

    # ---- the sender thread ----------------------------------------------------------------------------
    def start(self) -> Dispatcher:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="driftline-retrain-sender", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with httpx.Client(follow_redirects=False) as client:
            while not self._stop.is_set():
                try:
                    self.deliver_due(client)
                    due = self.outbox.next_due()
                except Exception:
                    log.exception("retraining sender pass failed")
                    due = None
                wait = 1.0 if due is None else min(1.0, max(0.02, due - self.clock()))
                self._wake.wait(wait)
                self._wake.clear()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the sender; an attempt in flight finishes within ``timeout_seconds``."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=max(timeout, self.settings.timeout_seconds + 1.0))
            self._thread = None
