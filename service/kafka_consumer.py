"""The Kafka envelope consumer: one owning thread, commits only after the store transaction.

Each message is decoded and merged in one store transaction (the envelope id is the de-duplication
key); the offset is committed only after that, so a crash replays at most a few messages, which the
id makes harmless. A message that cannot be decoded goes to the dead-letter topic and is counted;
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
        consumer = KafkaConsumer(k.topic, group_id=k.group_id, enable_auto_commit=False,
                                 auto_offset_reset="earliest", max_poll_records=k.max_poll_records,
                                 **self._client_kwargs())
        dlq = KafkaProducer(acks="all", **self._client_kwargs())
        try:
            while not self._stop.is_set():
                batch = consumer.poll(timeout_ms=k.poll_timeout_ms)
                for _tp, messages in batch.items():
                    for msg in messages:
                        self._handle(msg, dlq)
                if batch:
                    dlq.flush(timeout=10)
                    consumer.commit()
        except Exception:
            log.exception("Kafka consumer stopped on an unexpected error")
        finally:
            consumer.close()
            dlq.close(timeout=5)

    def _handle(self, msg: Any, dlq: Any) -> None:
        stats = self.parts.stats
        value = msg.value or b""
        try:
            env = decode_envelope(value, max_bytes=self.parts.settings.max_body_bytes)
        except WireFormatError as exc:
            dlq.send(self.parts.settings.kafka.dead_letter_topic, value=value, key=msg.key,
                     headers=[("driftline-error", str(exc).encode())])
            stats.record("kafka", "dead_lettered", len(value))
            log.warning("dead-lettered a message at %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, exc)
            return
        while not self._stop.is_set():
            try:
                res = self.parts.store.ingest(env, "kafka")
                stats.record("kafka", res.result, len(value), env.profiles, env.producer)
                return
            except StoreError as exc:  # retriable: never commit past a message that is not stored
                log.error("store unavailable, retrying: %s", exc)
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
