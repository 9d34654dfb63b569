"""Retraining requests: one policy, a durable outbox, signed deliveries with backoff.

The same :class:`RetrainPolicy` decides for both paths: the Alertmanager receiver (alerts labelled
``driftline_action: retrain``) and the service's own evaluator (embedded default, no Alertmanager).
A request is written to the outbox before any attempt, de-duplicated per alert and per model
cooldown, and delivered with exponential backoff and jitter until a 2xx or the deadline.

Every request is signed: ``X-Driftline-Signature: sha256=HMAC_SHA256(secret, timestamp + "." + body)``
with ``X-Driftline-Timestamp`` and an ``Idempotency-Key`` header.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .settings import RetrainSettings, RetrainTarget
from .store import Store

__all__ = ["Dispatcher", "RetrainPolicy", "sign"]

log = logging.getLogger("driftline.service.retrain")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class RetrainPolicy:
    """When drift warrants retraining: dataset drift held without a break for ``sustained_seconds``.

    The Prometheus rule ``DriftlineRetrainModel`` in ``alerts/`` is the same condition
    (``driftline_dataset_drift == 1`` with ``for:`` equal to ``sustained_seconds``); a test keeps the
    two equal, so the Alertmanager path and the embedded path retrain on the same evidence.
    """

    sustained_seconds: float
    cooldown_seconds: float

    def should_retrain(self, drift_since: float | None, now: float) -> bool:
        return drift_since is not None and now - drift_since >= self.sustained_seconds


def _payload(target: RetrainTarget, request: dict[str, Any]) -> dict[str, Any]:
    if target.kind == "github_dispatch":
        return {"event_type": "driftline-retrain", "client_payload": request}
    if target.kind == "argo_workflows":
        return {"resourceKind": "WorkflowTemplate", "submitOptions": {"parameters": [
            f"model={request['model']}", f"version={request['version']}",
            f"request={json.dumps(request, sort_keys=True)}"]}}
    if target.kind == "argo_events":
        return {"type": "driftline.retrain", "source": "driftline", "data": request}
    return request


class Dispatcher:
    """Owns the outbox: enqueue (transactional, de-duplicated) and a sender thread."""

    def __init__(self, store: Store, settings: RetrainSettings, *, clock: Any = time.time) -> None:
        self.store = store
        self.settings = settings
        self.policy = RetrainPolicy(settings.sustained_seconds, settings.cooldown_seconds)
        self.clock = clock
        self.results: Counter[tuple[str, str, str]] = Counter()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = random.Random()

    # ---- enqueue -----------------------------------------------------------------------------
    def request(self, model: str, version: str, reason: str, dedup: str, details: dict[str, Any]) -> int:
        """Queue one request per matching target; returns how many were queued (0 if de-duplicated)."""
        now = self.clock()
        last = self.store.query("SELECT last_request_at FROM retrain_state WHERE model = ?", (model,))
        targets = [t for t in self.settings.targets if not t.models or model in t.models]
        if last and now - float(last[0][0]) < self.policy.cooldown_seconds:
            for t in targets:
                self.results[(model, t.name, "cooldown")] += 1
            return 0
        queued = 0
        with self.store.transaction() as conn:
            for t in targets:
                key = hashlib.sha256(f"{dedup}|{t.name}".encode()).hexdigest()[:32]
                body = {"idempotency_key": key, "model": model, "version": version, "reason": reason,
                        "requested_at": now, **details}
                cur = self.store._exec(
                    conn, "INSERT INTO outbox (dedup_key, model, target, url, body, created_at, next_attempt_at, "
                    "attempts, status) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 'pending') ON CONFLICT (dedup_key) DO NOTHING",
                    (key, model, t.name, t.url, json.dumps(_payload(t, body), sort_keys=True), now, now))
                if cur.rowcount:
                    queued += 1
                else:
                    self.results[(model, t.name, "deduplicated")] += 1
            if queued:
                self.store._exec(conn, "DELETE FROM retrain_state WHERE model = ?", (model,))
                self.store._exec(conn, "INSERT INTO retrain_state (model, last_request_at) VALUES (?, ?)", (model, now))
        if queued:
            log.info("retraining requested for %s %s (%s): %d target(s)", model, version, reason, queued)
            self._wake.set()
        return queued

    # ---- deliver -------------------------------------------------------------------------------
    def outbox_stats(self) -> tuple[int, float]:
        rows = self.store.query("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE status = 'pending'")
        n, oldest = rows[0]
        return int(n), (self.clock() - float(oldest)) if oldest is not None else 0.0

    def deliver_due(self) -> int:
        """One pass over due requests; returns how many were delivered."""
        now = self.clock()
        due = self.store.query("SELECT id, model, target, url, body, created_at, attempts FROM outbox "
                               "WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY id", (now,))
        tokens = {t.name: t.token for t in self.settings.targets}
        delivered = 0
        for oid, model, target, url, body, created, attempts in due:
            data = body.encode()
            ts = str(int(now))
            payload = json.loads(body)
            key = payload.get("idempotency_key") or payload.get("client_payload", {}).get("idempotency_key", "")
            headers = {"Content-Type": "application/json", "X-Driftline-Timestamp": ts,
                       "X-Driftline-Signature": sign(self.settings.secret.get_secret_value(), ts, data),
                       "Idempotency-Key": str(key or oid), "User-Agent": "driftline-retrain"}
            token = tokens.get(target)
            if token is not None:
                headers["Authorization"] = f"Bearer {token.get_secret_value()}"
            error = self._post(url, data, headers)
            if error is None:
                self.store.execute("UPDATE outbox SET status = 'delivered', attempts = ?, delivered_at = ? "
                                   "WHERE id = ?", (attempts + 1, self.clock(), oid))
                self.results[(model, target, "delivered")] += 1
                delivered += 1
            elif self.clock() - float(created) > self.settings.deadline_seconds:
                self.store.execute("UPDATE outbox SET status = 'given_up', attempts = ?, last_error = ? WHERE id = ?",
                                   (attempts + 1, error, oid))
                self.results[(model, target, "given_up")] += 1
                log.error("gave up retraining request %s for %s to %s: %s", oid, model, target, error)
            else:
                delay = min(self.settings.backoff_max_seconds, self.settings.backoff_initial_seconds * 2 ** attempts)
                delay *= 0.5 + self._rng.random()  # jitter
                self.store.execute("UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?",
                                   (attempts + 1, self.clock() + delay, error, oid))
                self.results[(model, target, "retried")] += 1
                log.warning("retraining request %s to %s failed (%s); retry in %.1fs", oid, target, error, delay)
        return delivered

    def _post(self, url: str, data: bytes, headers: dict[str, str]) -> str | None:
        req = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.settings.timeout_seconds) as resp:
                return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            return str(getattr(exc, "reason", exc))

    def start(self) -> Dispatcher:
        self._thread = threading.Thread(target=self._run, name="driftline-retrain", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_due()
            except Exception:
                log.exception("retraining dispatcher pass failed")
            self._wake.wait(0.5)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
