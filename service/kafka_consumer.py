"""The Kafka envelope consumer: one owning thread, commits only after the store transaction.

Each poll batch is decoded and merged in one store transaction (the envelope id is the
de-duplication key); offsets are committed only after it, so a crash replays at most one batch,
which the ids make harmless. A message that cannot be decoded goes to the dead-letter topic and is counted;
the consumer never stops on it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from driftline.errors import WireFormatError
from driftline.wire import decode_envelope

from .api.deps import Parts
from .errors import StoreError

__all__ = ["EnvelopeConsumer"]

log = logging.getLogger("driftline.service.kafka")


class EnvelopeConsumer:
    """Consumes ``kafka.topic`` in group ``kafka.group_id`` until :meth:`stop`."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="driftline-kafka", daemon=True)

    def _client_kwargs(self) -> dict[str, Any]:
        k = self.parts.settings.kafka
        kw: dict[str, Any] = {"bootstrap_servers": k.bootstrap_servers, "security_protocol": k.security_protocol}
        for name in ("sasl_mechanism", "sasl_plain_username", "ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(k, name) is not None:
                kw[name] = getattr(k, name)
        if k.sasl_plain_password is not None:
            kw["sasl_plain_password"] = k.sasl_plain_password.get_secret_value()
        return kw

    def start(self) -> EnvelopeConsumer:
        self._thread.start()
        return self

    def _run(self) -> None:
        from kafka import KafkaConsumer, KafkaProducer

        k = self.parts.settings.kafka
        consumer = KafkaConsumer(k.topic, **{"auto_offset_reset": "earliest", **k.consumer_options},
                                 group_id=k.group_id, enable_auto_commit=False,
                                 max_poll_records=k.max_poll_records, **self._client_kwargs())
        dlq = KafkaProducer(**k.producer_options, acks="all", **self._client_kwargs())
        try:
            while not self._stop.is_set():
                batch = consumer.poll(timeout_ms=k.poll_timeout_ms)
                messages = [m for msgs in batch.values() for m in msgs]
                if not messages:
                    continue
                good = [g for g in (self._decode(m, dlq) for m in messages) if g is not None]
                self._store(good)
                dlq.flush(timeout=10)
                if not self._stop.is_set():
                    consumer.commit()  # only after the store transaction
        except Exception:
            log.exception("Kafka consumer stopped on an unexpected error")
        finally:
            consumer.close()
            dlq.close(timeout=5)

    def _decode(self, msg: Any, dlq: Any) -> tuple[Any, bytes] | None:
        value = msg.value or b""
        try:
            return decode_envelope(value, max_bytes=self.parts.settings.max_body_bytes), value
        except WireFormatError as exc:
            dlq.send(self.parts.settings.kafka.dead_letter_topic, value=value, key=msg.key,
                     headers=[("driftline-error", str(exc).encode())])
            self.parts.stats.record("kafka", "dead_lettered", len(value))
            log.warning("dead-lettered a message at %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, exc)
            return None

    def _store(self, good: list[tuple[Any, bytes]]) -> None:
        """One transaction for the whole poll batch; retried until it succeeds or the consumer stops."""
        if not good:
            return
        while not self._stop.is_set():
            try:
                with self.parts.timings.ingest_batch("kafka"):
                    results = self.parts.store.ingest_many(good, "kafka")
                for (env, raw), res in zip(good, results, strict=True):
                    self.parts.stats.record("kafka", res.result, len(raw), env.profiles, env.producer)
                return
            except StoreError as exc:  # retriable: never commit past messages that are not stored
                log.error("store unavailable, retrying: %s", exc)
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
