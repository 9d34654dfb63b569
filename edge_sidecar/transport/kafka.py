"""Kafka transport: one record per envelope, key = model and device, idempotent, ``acks=all``.

The key (:func:`~driftline.edge_sidecar.transport.record_key`) spreads a model's fleet over every
partition, so each consumer replica gets a share of a model with many devices, while one device's
windows stay on one partition, in order. The producer is idempotent (``enable_idempotence``: a
batch retried after a lost acknowledgement is written once; kafka-python >= 2.2.0), waits for every
in-sync replica (``acks=all``; pair it with the topic's ``min.insync.replicas``), may compress
batches (``compression_type``), and sends records up to ``max_request_size`` (the envelope limit
plus headroom: Kafka's default 1 MB would refuse large envelopes). TLS and SASL settings are passed
to kafka-python as given, and ``extra`` can set any other producer option. The producer is created
lazily and re-created after failures, so a sidecar that starts while the broker is down simply keeps
its windows in the spool until the broker is back. See docs/operations.md for the topic settings.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..errors import DeliveryRejected, TransportError
from ..ratelog import RateLimitFilter
from . import Outgoing

__all__ = ["KafkaTransport"]

log = logging.getLogger("driftline.sidecar.transport")

# Errors after which retrying the same record cannot succeed.
_PERMANENT = ("MessageSizeTooLargeError", "RecordTooLargeError", "InvalidTopicError",
              "TopicAuthorizationFailedError", "UnsupportedForMessageFormatError")
# Errors raised before anything reached a broker.
_NOT_SENT = ("NoBrokersAvailable", "KafkaConnectionError", "NodeNotReadyError")


class KafkaTransport:
    """Sends envelopes to a Kafka topic; owned by the shipper's thread."""

    name = "kafka"

    def __init__(self, bootstrap_servers: list[str], topic: str, *, delivery_timeout_ms: int = 30_000,
                 **producer_config: Any) -> None:
        self.topic = topic
        self.config: dict[str, Any] = {
            "bootstrap_servers": list(bootstrap_servers),
            "client_id": "driftline-sidecar",
            "acks": "all",
            "retries": 5,
            "retry_backoff_ms": 200,
            "request_timeout_ms": 15_000,
            "max_block_ms": 10_000,
            "delivery_timeout_ms": delivery_timeout_ms,
            "linger_ms": 5,
            "enable_idempotence": True,
            "max_in_flight_requests_per_connection": 5,  # the most an idempotent producer keeps in order
            "max_request_size": 4 * 1024 * 1024 + 64 * 1024,
        }
        self.config.update({k: v for k, v in producer_config.items() if v is not None})
        if self.config.get("compression_type") in ("none", ""):
            self.config["compression_type"] = None
        # Creating a producer blocks until a broker answers: no longer than a send may block.
        self.config.setdefault("bootstrap_timeout_ms", self.config["max_block_ms"])
        self.delivery_timeout_ms = int(self.config["delivery_timeout_ms"])
        self.config["acks"] = "all"  # the spool deletes a window only after every in-sync replica has it
        self._producer: Any = None
        _quiet_kafka_logs()

    @classmethod
    def from_settings(cls, s: Any) -> KafkaTransport:
        """From :class:`~driftline.edge_sidecar.settings.KafkaTransportSettings`."""
        secret = lambda v: v.get_secret_value() if v is not None else None  # noqa: E731
        cfg: dict[str, Any] = dict(
            client_id=s.client_id, security_protocol=s.security_protocol, ssl_cafile=s.ssl_cafile,
            ssl_certfile=s.ssl_certfile, ssl_keyfile=s.ssl_keyfile, ssl_password=secret(s.ssl_password),
            ssl_check_hostname=s.ssl_check_hostname, sasl_mechanism=s.sasl_mechanism,
            sasl_plain_username=s.sasl_plain_username, sasl_plain_password=secret(s.sasl_plain_password),
            request_timeout_ms=s.request_timeout_ms, max_block_ms=s.max_block_ms, retries=s.retries,
            retry_backoff_ms=s.retry_backoff_ms, compression_type=s.compression_type,
            enable_idempotence=s.enable_idempotence, max_request_size=int(s.max_request_size),
        )
        cfg.update(s.extra)
        return cls(s.bootstrap_servers, s.topic, **cfg)

    def _ensure(self) -> Any:
        if self._producer is None:
            from kafka import KafkaProducer
            from kafka.errors import KafkaError

            try:
                self._producer = KafkaProducer(**self.config)
            except KafkaError as exc:
                raise TransportError(f"cannot reach Kafka at {self.config['bootstrap_servers']}: {exc}") from exc
            except (RuntimeError, ValueError) as exc:  # e.g. a compression codec whose library is missing
                raise TransportError(f"Kafka producer settings refused: {exc}") from exc
        return self._producer

    def send(self, batch: list[Outgoing]) -> list[TransportError | None]:
        """Send every envelope, then wait for each acknowledgement (bounded by the delivery timeout)."""
        from kafka.errors import KafkaError

        if not batch:
            return []
        try:
            producer = self._ensure()
        except TransportError as exc:
            return [exc for _ in batch]
        futures: list[Any] = []
        for item in batch:
            try:
                futures.append(producer.send(self.topic, key=item.key, value=item.data))
            except KafkaError as exc:
                futures.append(self._error(exc, sent=False))
        deadline = time.monotonic() + self.delivery_timeout_ms / 1000 + 5
        results: list[TransportError | None] = []
        for fut in futures:
            if isinstance(fut, TransportError):
                results.append(fut)
                continue
            try:
                fut.get(timeout=max(0.1, deadline - time.monotonic()))
                results.append(None)
            except KafkaError as exc:
                results.append(self._error(exc, sent=True))
        if any(r is not None and not isinstance(r, DeliveryRejected) for r in results):
            # A producer that timed out across a broker restart can stay stuck on its old
            # connections and idempotence state for good (seen with kafka-python 3.0 and a restarted
            # KRaft broker): start the next round with a fresh one. A window it may have delivered
            # is merged once by the service (envelope ids), so a new producer id costs nothing.
            self.close()
        return results

    def _error(self, exc: Exception, *, sent: bool) -> TransportError:
        kind = type(exc).__name__
        if kind in _PERMANENT:
            return DeliveryRejected(f"Kafka refused the envelope: {kind}: {exc}")
        maybe = sent and kind not in _NOT_SENT
        return TransportError(f"Kafka delivery failed: {kind}: {exc}", maybe_delivered=maybe)

    def close(self) -> None:
        """Close the producer (undelivered records stay in the spool), never raising."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=5)
        except Exception as exc:  # noqa: BLE001 - a producer whose broker is gone cannot flush
            log.debug("closing the Kafka producer: %s", exc)
            _force_close(producer)


def _force_close(producer: Any) -> None:
    """Stop a producer whose ``close()`` raised.

    kafka-python's ``close()`` flushes first and raises ``KafkaTimeoutError`` when records cannot be
    delivered, before it stops the sender thread or marks itself closed; its ``__del__`` then tries
    again and raises inside the garbage collector. The records it holds are still in the spool, so
    dropping them is safe: stop the sender and mark the producer closed.
    """
    try:
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            sender.force_close()
        producer._closed = True
    except Exception as exc:  # noqa: BLE001 - best effort on a third-party object
        log.debug("force-closing the Kafka producer: %s", exc)


def _quiet_kafka_logs() -> None:
    """kafka-python logs each failed reconnect; a device whose broker is away for hours logs each once a minute."""
    for name in ("kafka", "kafka.net.manager", "kafka.net.connection", "kafka.conn", "kafka.client"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, RateLimitFilter) for f in lg.filters):
            lg.addFilter(RateLimitFilter(60.0))
