"""The Kafka envelope consumer: one supervised thread, commits only after the store transaction.

Each poll batch is decoded and merged in one store transaction (the envelope id is the
de-duplication key); offsets are committed only after it, so a crash replays at most one batch,
which the ids make harmless.

Permanent errors are never retried: a record that does not decode, or that the store refuses for
good (:class:`~driftline.service.errors.Unprocessable`, or a record that keeps failing while the
rest of its batch stores fine), goes to ``kafka.dead_letter_topic`` with the reason in its headers,
is counted, and the consumer commits past it. Only a store that refuses everything (an outage)
holds the batch, uncommitted, until it is back.

The thread is a supervisor: a broker that is absent at start or lost later (a probe every
``health_interval_seconds`` fails) closes the session and opens a new one after a bounded,
jittered backoff. ``up`` is true only while a session is consuming; ``/readyz`` reads it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from driftline.errors import WireFormatError
from driftline.wire import Envelope

from .ingest import REFUSAL_REASONS, Ingest, refusal
from .parts import Parts
from .store import is_outage

__all__ = ["DEAD_LETTER_REASONS", "FETCH_BYTES", "ConsumerCollector", "EnvelopeConsumer", "fetch_bytes", "reconnect_delay"]

log = logging.getLogger("driftline.service.kafka")
DEAD_LETTER_REASONS = REFUSAL_REASONS
"""Values of the ``driftline-reason`` header and of the dead-letter counter's ``reason`` label."""


def reconnect_delay(failures: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Seconds before reconnect attempt ``failures`` (>= 1): doubling, capped, half of it random."""
    base = min(maximum, initial * (2 ** min(max(failures - 1, 0), 30)))
    return base / 2 + rng.uniform(0, base / 2)


FETCH_BYTES = 8 << 20
"""Default ``max_partition_fetch_bytes``: kafka-python's 1 MiB holds about 25 envelopes of 50 features,
so a poll batch took a round trip per 25 records; 8 MiB holds a default poll batch (200 such
envelopes) in one, which cuts the client's CPU per record by about a third (bench/bench_service.py)."""


def fetch_bytes(max_body_bytes: int) -> int:
    """Bytes one fetch may take from a partition: :data:`FETCH_BYTES`, and never less than the largest
    envelope the service accepts plus Kafka's record framing."""
    return max(FETCH_BYTES, max_body_bytes + (64 << 10))


class _SessionLost(Exception):
    """The broker stopped answering; the supervisor opens a new session."""


class EnvelopeConsumer:
    """Consumes ``kafka.topic`` in group ``kafka.group_id`` until :meth:`stop`; the thread owns the clients."""

    def __init__(self, parts: Parts, *, seed: int | None = None) -> None:
        self.parts = parts
        self.ingest = Ingest(parts, "kafka")  # the same decode, store, count and classification as HTTP
        self.up = False
        self.reconnects = 0
        self.last_error: str | None = None
        self.lag: dict[int, int] = {}
        self.dead_letters = dict.fromkeys(DEAD_LETTER_REASONS, 0)
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="driftline-kafka", daemon=True)

    def _client_kwargs(self) -> dict[str, Any]:
        k = self.parts.settings.kafka
        kw: dict[str, Any] = {"bootstrap_servers": k.bootstrap_servers, "security_protocol": k.security_protocol,
                              "request_timeout_ms": k.request_timeout_ms, "bootstrap_timeout_ms": k.request_timeout_ms,
                              "reconnect_backoff_max_ms": int(k.reconnect_backoff_max_seconds * 1000)}
        for name in ("sasl_mechanism", "sasl_plain_username", "ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(k, name) is not None:
                kw[name] = getattr(k, name)
        if k.sasl_plain_password is not None:
            kw["sasl_plain_password"] = k.sasl_plain_password.get_secret_value()
        return kw

    def start(self) -> EnvelopeConsumer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ---- the supervisor ------------------------------------------------------------------------
    def _run(self) -> None:
        k = self.parts.settings.kafka
        failures = 0
        while not self._stop.is_set():
            consumed = False
            try:
                consumed = self._session()
            except Exception as exc:  # every failure ends the session; the loop below reconnects
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("Kafka consumer session ended: %s", self.last_error)
            self.up = False
            if self._stop.is_set():
                break
            failures = 1 if consumed else failures + 1
            self.reconnects += 1
            delay = reconnect_delay(failures, k.reconnect_backoff_initial_seconds, k.reconnect_backoff_max_seconds,
                                    self._rng)
            log.info("reconnecting to Kafka in %.1f s (attempt %d)", delay, failures)
            self._stop.wait(delay)

    def _session(self) -> bool:
        """Connect, consume until the broker is lost or :meth:`stop`; True if it was ever up."""
        from kafka import KafkaConsumer, KafkaProducer

        k = self.parts.settings.kafka
        defaults = {"auto_offset_reset": "earliest",
                    "max_partition_fetch_bytes": fetch_bytes(self.parts.settings.max_body_bytes)}
        consumer = KafkaConsumer(k.topic, **{**defaults, **k.consumer_options},
                                 group_id=k.group_id, enable_auto_commit=False,
                                 max_poll_records=k.max_poll_records, **self._client_kwargs())
        dlq = None
        was_up = False
        try:
            dlq = KafkaProducer(**{"max_block_ms": k.request_timeout_ms, **k.producer_options}, acks="all",
                                **self._client_kwargs())
            next_probe = 0.0
            while not self._stop.is_set():
                if time.monotonic() >= next_probe:
                    self._probe(consumer)
                    was_up = self.up = True
                    next_probe = time.monotonic() + k.health_interval_seconds
                batch = consumer.poll(timeout_ms=k.poll_timeout_ms)
                messages = [m for msgs in batch.values() for m in msgs]
                if not messages:
                    continue
                if not self._handle(messages, dlq):
                    return was_up  # stopping with a batch not stored: do not commit it
                self._commit(consumer)
            return was_up
        finally:
            self.up = False
            consumer.close(autocommit=False, timeout_ms=2000)
            if dlq is not None:
                dlq.close(timeout=2)

    def _probe(self, consumer: Any) -> None:
        """Ask the broker for the topic's end offsets (bounded by request_timeout_ms): liveness and lag."""
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        topic = self.parts.settings.kafka.topic
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            assigned = {tp for tp in consumer.assignment() if tp.topic == topic}
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            ends = consumer.end_offsets(tps) if tps else {}
            if not tps and not consumer.bootstrap_connected():
                raise _SessionLost("no connection to any broker")
            lag = {}
            for tp in assigned:
                pos = consumer.position(tp, timeout_ms=self.parts.settings.kafka.request_timeout_ms)
                lag[tp.partition] = max(0, int(ends.get(tp, pos)) - int(pos))
        except KafkaError as exc:
            raise _SessionLost(f"broker probe failed: {type(exc).__name__}: {exc}") from exc
        with self._lock:
            self.lag = lag

    def _commit(self, consumer: Any) -> None:
        from kafka.errors import CommitFailedError

        try:
            consumer.commit()  # only after the store transaction
        except CommitFailedError as exc:  # a rebalance took the partitions: their new owner replays, ids dedupe
            log.info("commit after a rebalance failed (the batch will be replayed harmlessly): %s", exc)

    # ---- one batch -----------------------------------------------------------------------------
    def _handle(self, messages: list[Any], dlq: Any) -> bool:
        """Store what can be stored, dead-letter what never can; False if stopped before storing."""
        good: list[tuple[Any, Envelope, bytes]] = []
        dead: list[tuple[Any, str, str]] = []
        for m in messages:
            value = m.value or b""
            try:
                good.append((m, self.ingest.decode(value), value))
            except WireFormatError as exc:
                dead.append((m, refusal(exc) or "malformed", str(exc)))
        if not self._store(good, dead):
            return False
        self._dead_letter(dlq, dead)  # before the commit: a failed send ends the session, uncommitted
        return True

    def _store(self, good: list[tuple[Any, Envelope, bytes]], dead: list[tuple[Any, str, str]]) -> bool:
        """Store the batch in one transaction; if that fails, record by record. True when every record
        is stored or marked for the dead-letter topic, False if stopped first.

        A record refused for good (``retriable`` false) is dead-lettered at once. A record that keeps
        failing (``record_attempts``) while others of its batch store is dead-lettered as
        ``store_refused``. When nothing stores, the store is down: wait and retry the whole batch.
        """
        if not good or self._try_store(good) is None:
            return True
        k = self.parts.settings.kafka
        outages = 0
        while not self._stop.is_set():
            # a store that fails as a whole (disk full, connection lost: ``is_outage``) is down even when
            # some records of the batch still stored (duplicates need no space): hold the rest, never
            # dead-letter them
            pending, errors, stored_any, outage = good, {}, False, False
            for attempt in range(k.record_attempts):
                left = []
                for item in pending:
                    err = self._try_store([item])
                    if err is None:
                        stored_any = True
                    elif (reason := refusal(err)) is not None:
                        dead.append((item[0], reason, str(err)))
                    else:
                        errors[id(item)] = err
                        outage = outage or is_outage(err)
                        left.append(item)
                pending = left
                if not pending:
                    return True
                if not stored_any or outage:
                    break
                self._stop.wait(0.2 * (attempt + 1))
            if stored_any and not outage:
                dead.extend((item[0], "store_refused", str(errors[id(item)])) for item in pending)
                return True
            outages += 1
            log.error("store unavailable, retrying (%d): %s", outages, next(iter(errors.values())))
            self._stop.wait(min(30.0, 0.5 * 2 ** min(outages, 6)))
        return False

    def _try_store(self, items: list[tuple[Any, Envelope, bytes]]) -> Exception | None:
        try:
            self.ingest.store([(env, raw) for _, env, raw in items])
        except Exception as exc:  # classified by ingest.refusal (type and ``retriable``)
            return exc
        return None

    def _dead_letter(self, dlq: Any, dead: list[tuple[Any, str, str]]) -> None:
        from kafka.errors import KafkaError

        if not dead:
            return
        topic = self.parts.settings.kafka.dead_letter_topic
        try:
            futures = [dlq.send(topic, value=m.value, key=m.key, headers=[
                ("driftline-reason", reason.encode()), ("driftline-error", why.encode("utf-8", "replace")[:1000]),
                ("driftline-source", f"{m.topic}/{m.partition}/{m.offset}".encode())]) for m, reason, why in dead]
            for f in futures:
                f.get(timeout=self.parts.settings.kafka.request_timeout_ms / 1000 + 5)
        except KafkaError as exc:
            raise _SessionLost(f"cannot write to the dead-letter topic {topic}: {exc}") from exc
        for m, reason, why in dead:
            with self._lock:
                self.dead_letters[reason] += 1
            self.ingest.refused(len(m.value or b""), "dead_lettered")
            log.warning("dead-lettered %s[%s]@%s (%s): %s", m.topic, m.partition, m.offset, reason, why)

    def snapshot(self) -> dict[str, Any]:
        """State for the collector and /readyz."""
        with self._lock:
            return {"up": self.up and self.alive, "lag": dict(self.lag), "reconnects": self.reconnects,
                    "dead_letters": dict(self.dead_letters), "last_error": self.last_error}


class ConsumerCollector:
    """``driftline_kafka_consumer_*`` families, read from the consumer at scrape time."""

    def __init__(self, consumer: EnvelopeConsumer) -> None:
        self.consumer = consumer

    def collect(self) -> Iterator[Any]:
        snap = self.consumer.snapshot()
        up = GaugeMetricFamily("driftline_kafka_consumer_up", "1 while the Kafka consumer is connected and consuming")
        up.add_metric([], 1.0 if snap["up"] else 0.0)
        lag = GaugeMetricFamily("driftline_kafka_consumer_lag_messages",
                                "Messages behind the partition end, per partition this replica owns",
                                labels=["partition"])
        for partition, n in sorted(snap["lag"].items()):
            lag.add_metric([str(partition)], n)
        rec = CounterMetricFamily("driftline_kafka_consumer_reconnects", "Kafka sessions reopened after a failure")
        rec.add_metric([], snap["reconnects"])
        dl = CounterMetricFamily("driftline_kafka_dead_letters", "Records sent to the dead-letter topic",
                                 labels=["reason"])
        for reason, n in snap["dead_letters"].items():
            dl.add_metric([reason], n)
        yield from (up, lag, rec, dl)
