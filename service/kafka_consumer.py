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
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from driftline.errors import WireFormatError
from driftline.wire import Envelope

from .ingest import REFUSAL_REASONS, Ingest, refusal
from .parts import Parts
from .settings import kafka_options
from .store import is_outage

__all__ = ["DEAD_LETTER_REASONS", "FETCH_BYTES", "ConsumerCollector", "EnvelopeConsumer", "Record", "fetch_bytes",
           "reconnect_delay"]

log = logging.getLogger("driftline.service.kafka")
DEAD_LETTER_REASONS = REFUSAL_REASONS
"""Values of the ``driftline-reason`` header and of the dead-letter counter's ``reason`` label."""
_TOO_LARGE = frozenset({10, 18})  # librdkafka's MSG_SIZE_TOO_LARGE and RECORD_LIST_TOO_LARGE (broker codes)


def reconnect_delay(failures: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Seconds before reconnect attempt ``failures`` (>= 1): doubling, capped, half of it random."""
    base = min(maximum, initial * (2 ** min(max(failures - 1, 0), 30)))
    return base / 2 + rng.uniform(0, base / 2)


FETCH_BYTES = 8 << 20
"""Default ``max.partition.fetch.bytes``: librdkafka's 1 MiB holds about 20 envelopes of 50 features, so
a consume batch took a fetch per 20 records; 8 MiB holds a default batch (200 such envelopes) in one."""


def fetch_bytes(max_body_bytes: int) -> int:
    """Bytes one fetch may take from a partition: :data:`FETCH_BYTES`, and never less than the largest
    envelope the service accepts plus Kafka's record framing."""
    return max(FETCH_BYTES, max_body_bytes + (64 << 10))


# librdkafka's answers to a commit whose partitions a rebalance took: the new owner replays, ids dedupe
_REBALANCE_CODES = ("REBALANCE_IN_PROGRESS", "ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID", "_ASSIGNMENT_LOST",
                    "_STATE", "_NO_OFFSET")


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record, copied out of the client: what a batch hands to decode, store and the
    dead-letter topic, so nothing past the poll depends on the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    @property
    def source(self) -> str:
        """``topic/partition/offset``: the ``driftline-source`` header of a dead letter."""
        return f"{self.topic}/{self.partition}/{self.offset}"


def _lost(topic: str, err: Any) -> _SessionLost:
    """The session ends on a dead-letter write that failed for another reason than size (librdkafka's error)."""
    return _SessionLost(f"cannot write to the dead-letter topic {topic}: {err.name()}: {err.str()}")


class _SessionLost(Exception):
    """The broker stopped answering; the supervisor opens a new session."""


class EnvelopeConsumer:
    """Consumes ``kafka.topic`` in group ``kafka.group_id`` until :meth:`stop`; the thread owns the clients.

    The client is librdkafka (``confluent-kafka``): its fetcher reads the socket in C, which costs
    about 35 us of CPU per 48 KB record against about 195 us for kafka-python's 4 KiB reads
    (bench/bench_service.py, docs/operations.md).
    """

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

    def _client_config(self) -> dict[str, Any]:
        """librdkafka properties both clients share: brokers, security, timeouts, logging."""
        k = self.parts.settings.kafka
        return {"bootstrap.servers": ",".join(k.bootstrap_servers), **k.security_properties(),
                "socket.timeout.ms": max(k.request_timeout_ms, 10),
                "reconnect.backoff.max.ms": int(k.reconnect_backoff_max_seconds * 1000),
                "logger": log, "error_cb": self._client_error, "log.connection.close": False}

    def consumer_config(self) -> dict[str, Any]:
        """The consumer's librdkafka properties: commits only by the service, after the store."""
        k = self.parts.settings.kafka
        fetch = fetch_bytes(self.parts.settings.max_body_bytes)
        defaults = {"client.id": "driftline-service", "auto.offset.reset": "earliest", "max.partition.fetch.bytes": fetch,
                    "fetch.max.bytes": max(52428800, fetch), "receive.message.max.bytes": max(100000000, fetch * 2),
                    "session.timeout.ms": 45000, "heartbeat.interval.ms": 3000,
                    "queued.max.messages.kbytes": 65536}
        return {**defaults, **kafka_options(k.consumer_options), **self._client_config(), "group.id": k.group_id,
                "enable.auto.commit": False, "enable.auto.offset.store": False, "enable.partition.eof": False}

    def producer_config(self) -> dict[str, Any]:
        """The dead-letter producer's properties: every refused record fits, and is acknowledged by all
        in-sync replicas before the consumer commits past it."""
        k = self.parts.settings.kafka
        fetch = fetch_bytes(self.parts.settings.max_body_bytes)
        defaults = {"client.id": "driftline-service-dlq", "message.max.bytes": fetch, "message.timeout.ms": k.request_timeout_ms + 5000}
        return {**defaults, **kafka_options(k.producer_options), **self._client_config(), "acks": "all"}

    def _client_error(self, err: Any) -> None:
        """librdkafka's own errors (a broker down, a refused login): logged and kept for /readyz; the
        probe decides whether the session is lost."""
        self.last_error = f"{err.name()}: {err.str()}"
        if err.fatal():
            log.error("Kafka client error (fatal): %s", self.last_error)
        else:
            log.debug("Kafka client error: %s", self.last_error)

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
        from confluent_kafka import Consumer, Producer

        k = self.parts.settings.kafka
        consumer = Consumer(self.consumer_config())
        dlq = None
        was_up = False
        try:
            consumer.subscribe([k.topic])
            dlq = Producer(self.producer_config())
            next_probe = 0.0
            while not self._stop.is_set():
                if time.monotonic() >= next_probe:
                    self._probe(consumer)
                    was_up = self.up = True
                    next_probe = time.monotonic() + k.health_interval_seconds
                records = self._poll(consumer, k.max_poll_records, k.poll_timeout_ms / 1000)
                if not records:
                    continue
                if not self._handle(records, dlq):
                    return was_up  # stopping with a batch not stored: do not commit it
                self._commit(consumer, records)
            return was_up
        finally:
            self.up = False
            consumer.close()  # auto-commit is off: closing commits nothing
            if dlq is not None:
                dlq.flush(2)

    def _poll(self, consumer: Any, n: int, timeout: float) -> list[Record]:
        """Up to ``n`` records; a fatal client error ends the session, others are librdkafka's to retry."""
        records = []
        for m in consumer.consume(num_messages=n, timeout=timeout):
            err = m.error()
            if err is None:
                records.append(Record(m.topic(), m.partition(), m.offset(), m.key(), m.value() or b""))
            elif err.fatal():
                raise _SessionLost(f"Kafka consumer failed: {err.name()}: {err.str()}")
            else:  # a topic not created yet, a partition moving: the client retries by itself
                self.last_error = f"{err.name()}: {err.str()}"
                log.debug("Kafka consumer: %s", self.last_error)
        return records

    def _probe(self, consumer: Any) -> None:
        """Ask the broker for the topic's metadata and end offsets (bounded by request_timeout_ms):
        liveness and lag."""
        from confluent_kafka import KafkaException, TopicPartition

        k = self.parts.settings.kafka
        timeout = k.request_timeout_ms / 1000
        try:
            consumer.list_topics(k.topic, timeout=timeout)  # raises when no broker answers
            assigned = [tp for tp in consumer.assignment() if tp.topic == k.topic]
            positions = {tp.partition: tp.offset for tp in consumer.position(assigned)} if assigned else {}
            unknown = [TopicPartition(k.topic, p) for p, off in positions.items() if off < 0]
            if unknown:  # nothing consumed yet: the committed offset, else the start of the log
                positions.update({tp.partition: tp.offset for tp in consumer.committed(unknown, timeout=timeout)})
            lag = {}
            for tp in assigned:
                low, high = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
                pos = positions.get(tp.partition, -1)
                lag[tp.partition] = max(0, int(high) - int(pos if pos >= 0 else low))
        except KafkaException as exc:
            raise _SessionLost(f"broker probe failed: {exc.args[0] if exc.args else exc}") from exc
        with self._lock:
            self.lag = lag

    def _commit(self, consumer: Any, records: list[Record]) -> None:
        """Commit past the batch (only after the store transaction): each partition's last offset + 1."""
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        ends: dict[tuple[str, int], int] = {}
        for r in records:
            key = (r.topic, r.partition)
            ends[key] = max(ends.get(key, -1), r.offset + 1)
        try:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()], asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            name = err.name() if isinstance(err, KafkaError) else ""
            if name not in _REBALANCE_CODES:
                raise
            log.info("commit after a rebalance failed (the batch will be replayed harmlessly): %s", err)

    # ---- one batch -----------------------------------------------------------------------------
    def _handle(self, messages: list[Record], dlq: Any) -> bool:
        """Store what can be stored, dead-letter what never can; False if stopped before storing."""
        good: list[tuple[Record, Envelope, bytes]] = []
        dead: list[tuple[Record, str, str]] = []
        for m in messages:
            try:
                good.append((m, self.ingest.decode(m.value), m.value))
            except WireFormatError as exc:
                dead.append((m, refusal(exc) or "malformed", str(exc)))
        if not self._store(good, dead):
            return False
        self._dead_letter(dlq, dead)  # before the commit: a failed send ends the session, uncommitted
        return True
    def _store(self, good: list[tuple[Record, Envelope, bytes]], dead: list[tuple[Record, str, str]]) -> bool:
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

    def _try_store(self, items: list[tuple[Record, Envelope, bytes]]) -> Exception | None:
        try:
            self.ingest.store([(env, raw) for _, env, raw in items])
        except Exception as exc:  # classified by ingest.refusal (type and ``retriable``)
            return exc
        return None

    def _dead_letter(self, dlq: Any, dead: list[tuple[Record, str, str]]) -> None:
        """Send refused records to the dead-letter topic, each acknowledged before the batch is committed.

        A record the dead-letter topic refuses as too large (its ``max.message.bytes`` is below the
        source topic's) is sent again alone, then, if refused again, without its value, with
        ``driftline-truncated`` giving its size: that refusal is permanent, so retrying the record would
        hold the partition forever, and the headers still say where the original is (until the source
        topic's retention). Any other failure ends the session, uncommitted.
        """
        if not dead:
            return
        topic = self.parts.settings.kafka.dead_letter_topic
        failed = self._send_dead(dlq, topic, [(m, reason, why, m.value) for m, reason, why in dead])
        too_large = [i for i, err in failed.items() if err.code() in _TOO_LARGE]
        other = [err for err in failed.values() if err.code() not in _TOO_LARGE]
        if other:
            raise _lost(topic, other[0])
        for i in too_large:  # the broker refuses a whole batch for one record: each alone, then its headers
            self._send_alone(dlq, topic, dead[i])
        for m, reason, why in dead:
            with self._lock:
                self.dead_letters[reason] += 1
            self.ingest.refused(len(m.value), "dead_lettered")
            log.warning("dead-lettered %s[%s]@%s (%s): %s", m.topic, m.partition, m.offset, reason, why)

    def _send_alone(self, dlq: Any, topic: str, item: tuple[Record, str, str]) -> None:
        """One record the dead-letter topic refused in a batch: whole if it fits alone, else its headers."""
        m, reason, why = item
        for value in (m.value, None):
            err = self._send_dead(dlq, topic, [(m, reason, why, value)]).get(0)
            if err is None:
                if value is None:
                    log.warning("the dead-letter topic %s refused a record of %d bytes as too large: sent its "
                                "headers only (raise its max.message.bytes to the envelope topic's)", topic,
                                len(m.value))
                return
            if err.code() not in _TOO_LARGE or value is None:
                raise _lost(topic, err)

    def _send_dead(self, dlq: Any, topic: str, items: list[tuple[Record, str, str, bytes | None]]) -> dict[int, Any]:
        """Produce and flush; the delivery error of each item that failed, by its index.

        A value of None sends the headers alone, with ``driftline-truncated`` set to the record's size.
        A broker that does not acknowledge in time ends the session (nothing is committed).
        """
        from confluent_kafka import KafkaError, KafkaException

        failed: dict[int, Any] = {}

        def on_delivery(i: int) -> Any:
            def delivered(err: Any, _msg: Any) -> None:
                if err is not None:
                    failed[i] = err
            return delivered

        try:
            for i, (m, reason, why, value) in enumerate(items):
                headers = [("driftline-reason", reason.encode()),
                           ("driftline-error", why.encode("utf-8", "replace")[:1000]),
                           ("driftline-source", m.source.encode())]
                if value is None:
                    headers.append(("driftline-truncated", str(len(m.value)).encode()))
                try:
                    dlq.produce(topic, value=value, key=m.key, on_delivery=on_delivery(i), headers=headers)
                except KafkaException as exc:  # refused before sending (larger than message.max.bytes)
                    err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                    if err is None or err.code() not in _TOO_LARGE:
                        raise
                    failed[i] = err
            left = dlq.flush(self.parts.settings.kafka.request_timeout_ms / 1000 + 5)
        except (KafkaException, BufferError) as exc:
            raise _SessionLost(f"cannot write to the dead-letter topic {topic}: {exc}") from exc
        if left:
            raise _SessionLost(f"cannot write to the dead-letter topic {topic}: {left} records not acknowledged in time")
        return failed

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
