"""The shipper: one background thread moving spooled windows to the transport, at least once.

Each round leases the oldest pending windows, stamps a fresh producer map (spool backlog, RSS,
CPU) into each envelope while keeping its id, sends the batch, then confirms (deletes), rejects
(moves aside) or releases every file according to its outcome. After a failure it waits with
exponential backoff and jitter (half fixed, half random, capped) so a fleet of devices coming back
after an outage does not hit the receiver in lockstep. The thread owns the transport.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from driftline.errors import WireFormatError
from driftline.wire import decode_envelope, encode_envelope

from .errors import DeliveryRejected, TransportError
from .ratelog import RateLimitedLog
from .spool import MAX_FILE_BYTES, Spool
from .transport import Outgoing, Transport, record_key

__all__ = ["Shipper", "backoff_delay"]

log = logging.getLogger("driftline.sidecar.shipper")


def backoff_delay(failures: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Seconds to wait after ``failures`` consecutive failed rounds ("equal jitter")."""
    base = min(maximum, initial * (2 ** max(failures - 1, 0)))
    return base / 2 + rng.uniform(0, base / 2)


class Shipper:
    """Spool -> transport in a background thread; ``drain`` waits for an empty spool (bounded)."""

    def __init__(
        self,
        spool: Spool,
        transport: Transport,
        *,
        producer: Callable[[], dict[str, str]] | None = None,
        batch_windows: int = 32,
        backoff_initial: float = 0.5,
        backoff_max: float = 60.0,
        seed: int | None = None,
        conformance: Callable[[], list[dict[str, Any]]] | None = None,
        compress: bool | None = None,
    ) -> None:
        self.spool = spool
        self.compress = compress  # encode_envelope's: None compresses when it saves a quarter
        self.transport = transport
        self.producer = producer
        self.batch_windows = batch_windows
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._rng = random.Random(seed)
        self.deliveries = {"ok": 0, "error": 0}
        self.rejected = 0
        self.failures = 0
        self.last_ok: float | None = None
        self.last_error: str | None = None
        self.last_rejection: str | None = None
        self.last_rejected_at: float | None = None
        self.last_delivered_at: float | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._ratelog = RateLimitedLog(log)
        self.conformance = conformance  # the golden runner's newest results, stamped like the producer map

    def start(self) -> Shipper:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="driftline-shipper", daemon=True)
            self._thread.start()
        return self

    def wake(self) -> None:
        """A new window is in the spool (does not cut a backoff short)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.transport.close()

    def drain(self, timeout: float) -> bool:
        """Wait until the spool is empty or ``timeout`` seconds pass; True when empty."""
        deadline = time.monotonic() + timeout
        self.wake()
        while True:
            if self.spool.stats().pending == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def problem(self) -> str | None:
        """Why delivery is not working right now, in one line; None while it works (or has nothing to do).

        Failing rounds (receiver unreachable, 5xx, timeouts) and a newest outcome that was a rejection
        (a wrong token, a refused envelope) both count: in either case nothing the device observes arrives.
        """
        if not self.alive:
            return "the shipper thread is not running"
        if self.failures > 0:
            return (f"deliveries over {self.transport.name} are failing ({self.failures} failed rounds in a row, "
                    f"{self.spool.stats().pending} windows pending): {self.last_error}")
        if self.last_rejected_at is not None and self.last_rejected_at > (self.last_delivered_at or 0.0):
            return f"the receiver refused the newest delivery (windows set aside, not retried): {self.last_rejection}"
        return None

    # ---- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sent, failed = self.ship_once()
            except Exception as exc:  # pragma: no cover - ship_once handles expected failures itself
                log.exception("shipper round failed")
                sent, failed = 0, True
                self.last_error = str(exc)
            if failed:
                self.failures += 1
                self._stop.wait(backoff_delay(self.failures, self.backoff_initial, self.backoff_max, self._rng))
            elif sent == 0:
                self._wake.wait(1.0)
                self._wake.clear()

    def ship_once(self) -> tuple[int, bool]:
        """One round: returns (windows confirmed, whether a retriable failure happened).

        After a failure only one window goes out per round (a probe) until a delivery succeeds:
        windows out for delivery cannot be merged, and the spool needs them when it is full.
        """
        leases = self.spool.lease(self.batch_windows if self.failures == 0 else 1)
        if not leases:
            return 0, False
        batch: list[Outgoing] = []
        ready = []
        producer = self.producer() if self.producer else None
        for lease in leases:
            try:
                env = decode_envelope(lease.data, max_bytes=MAX_FILE_BYTES)
            except WireFormatError as exc:
                self.spool.reject(lease.name, f"spool file does not decode: {exc}")
                continue
            if producer is not None:
                env.producer = dict(producer)
            if self.conformance is not None:
                env.conformance = self.conformance()
            source = env.profiles[0].key.source if env.profiles else ""
            batch.append(Outgoing(record_key(lease.model, source or str((producer or env.producer).get("device", ""))),
                                  encode_envelope(env, compress=self.compress), lease.envelope_id))
            ready.append(lease)
        if not batch:
            return 0, False
        try:
            results = self.transport.send(batch)
            if len(results) != len(batch):
                raise RuntimeError(f"transport returned {len(results)} outcomes for {len(batch)} envelopes")
        except Exception as exc:  # a transport bug must not lose windows: release them all
            results = [TransportError(f"{type(exc).__name__}: {exc}", maybe_delivered=True) for _ in batch]
        sent, failed = 0, False
        for lease, res in zip(ready, results, strict=True):
            if res is None:
                self.spool.confirm(lease.name)
                self.deliveries["ok"] += 1
                self.last_delivered_at = time.time()
                sent += 1
            elif isinstance(res, DeliveryRejected):
                self.deliveries["error"] += 1
                self.rejected += 1
                self.last_rejection = str(res)
                self.last_rejected_at = time.time()
                self.spool.reject(lease.name, str(res))
            else:
                if res.attempted:
                    self.deliveries["error"] += 1
                failed = True
                self.last_error = str(res)
                self.spool.release(lease.name, tried=res.maybe_delivered)
        if failed:
            self._ratelog.warning("deliver", "delivery over %s failed (%d windows pending): %s",
                                  self.transport.name, self.spool.stats().pending, self.last_error)
        else:
            self.failures = 0
            self.last_ok = time.time()
        return sent, failed
