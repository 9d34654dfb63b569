"""The one ingest path, for HTTP and Kafka alike: decode, store, count, and classify what failed.

Both transports call the same three steps, so an envelope is judged the same way whichever way it
came: :meth:`Ingest.decode` (the wire bounds of ``max_body_bytes``), :meth:`Ingest.store` (the
exactly-once transaction, timed, then counted per envelope) and :func:`refusal` (whether a failure
is permanent, and under which reason). Permanent failures are refused, never retried: HTTP answers
4xx, Kafka dead-letters the record. Only a retriable failure (the store is down) is tried again.
What each transport does with a refusal (a status code, a dead-letter topic) stays in the transport.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from driftline.errors import UnsupportedVersionError, WireFormatError
from driftline.wire import Envelope, decode_envelope

from .parts import Parts
from .store import IngestResult

__all__ = ["REFUSAL_REASONS", "Ingest", "refusal"]

REFUSAL_REASONS = ("malformed", "unsupported_version", "unprocessable", "store_refused")
"""Why an envelope can never be stored; the dead-letter topic's ``driftline-reason`` header and label.

``store_refused`` is the Kafka consumer's own finding (a record that keeps failing while the rest of
its batch stores), not a class of error, so :func:`refusal` never returns it.
"""


def refusal(exc: BaseException) -> str | None:
    """The permanent reason of a failed decode or store, or ``None`` when trying again can succeed.

    Classified by type and by the ``retriable`` attribute of Driftline's errors (kafka-python's
    convention): an error without one is taken as retriable, so nothing is dropped by mistake.
    """
    if isinstance(exc, UnsupportedVersionError):
        return "unsupported_version"
    if isinstance(exc, WireFormatError):
        return "malformed"
    if not getattr(exc, "retriable", True):
        return "unprocessable"
    return None


class Ingest:
    """The ingest steps of one transport (``"http"`` or ``"kafka"``) over the service's parts."""

    def __init__(self, parts: Parts, transport: str) -> None:
        self.parts = parts
        self.transport = transport

    def decode(self, raw: bytes) -> Envelope:
        """Decode one envelope within ``max_body_bytes``; raises :class:`WireFormatError` (permanent).

        Numeric sketches are checked but built lazily: the store keeps the envelope's own bytes (or
        re-encodes a multi-profile envelope's windows, which builds them then), and nothing else on
        the ingest path reads them.
        """
        return decode_envelope(raw, max_bytes=self.parts.settings.max_body_bytes, lazy=True)

    def store(self, items: Sequence[tuple[Envelope, bytes]]) -> list[IngestResult]:
        """Merge envelopes (with their own bytes) in one transaction, then count each by its result.

        Raises what the store raises (a :class:`~driftline.service.errors.ServiceError`); nothing is
        counted then, since the caller decides whether the batch is refused or tried again.
        """
        timings = self.parts.timings
        if timings is not None:
            with timings.ingest_batch(self.transport):
                results = self.parts.store.ingest_many(items, self.transport)
        else:
            results = self.parts.store.ingest_many(items, self.transport)
        for (env, raw), res in zip(items, results, strict=True):
            self.parts.stats.record(self.transport, res.result, len(raw), env.profiles, env.producer)
            if res.result == "accepted" and self.parts.device_health is not None:
                self.parts.device_health.observe(env.profiles, env.producer)
        if self.parts.conformance is not None:  # device state, so a re-sent (duplicate) envelope counts too
            self.parts.conformance.record([env for (env, _), res in zip(items, results, strict=True)
                                           if res.result in ("accepted", "duplicate")], time.time())
        return results

    def refused(self, nbytes: int, result: str) -> None:
        """Count an envelope refused for good (``rejected``, ``forbidden``, ``dead_lettered``)."""
        self.parts.stats.record(self.transport, result, nbytes)
