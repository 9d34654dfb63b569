"""Transports: how spooled envelopes leave the device (HTTP to the service, or Kafka).

A transport sends a batch and reports, per envelope, ``None`` (the receiver confirmed it) or the
:class:`~driftline.edge_sidecar.errors.TransportError` that stopped it. It never deletes anything:
the shipper confirms, releases or rejects spool files from those outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..errors import SettingsError, TransportError

__all__ = ["Outgoing", "Transport", "check_url", "make_transport", "record_key", "transport_from_url"]


def record_key(model: str, source: str) -> bytes:
    """The Kafka record key of an envelope: ``model/device``.

    Keyed by model alone, a model's whole fleet lands on one partition and every other consumer
    idles; keyed by model and device, the fleet spreads over the partitions (murmur2 of the key) and
    one device's windows stay in order on one partition. An envelope without a device keys by model.
    """
    return f"{model}/{source}".encode() if source else model.encode()


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One envelope to send: Kafka record key (:func:`record_key`), bytes, and its id for logs."""

    key: bytes
    data: bytes
    envelope_id: str


class Transport(Protocol):
    """What the shipper needs from a transport."""

    name: str

    def send(self, batch: list[Outgoing]) -> list[TransportError | None]: ...

    def close(self) -> None: ...


def make_transport(settings: Any) -> Transport:
    """Build the transport named by ``settings.kind`` (a TransportSettings)."""
    if settings.kind == "kafka":
        from .kafka import KafkaTransport

        return KafkaTransport.from_settings(settings.kafka)
    from .http import HttpTransport

    h = settings.http
    return HttpTransport(h.url, token=h.token.get_secret_value() if h.token else None,
                         timeout=h.timeout_seconds, ca_file=h.ca_file, verify=h.verify_tls)


def check_url(url: str) -> str:
    """The URL's scheme (``http``, ``https``, ``kafka``) when a transport can be built from it; else
    :class:`~driftline.edge_sidecar.errors.SettingsError` saying what is wrong. Pure: connects to nothing."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise SettingsError(f"--to {url}: no host")
        return parts.scheme
    if parts.scheme == "kafka":
        topic = parts.path.strip("/")
        if not parts.netloc or not topic or "/" in topic:
            raise SettingsError(f"--to {url}: expected kafka://host:port/topic")
        return parts.scheme
    raise SettingsError(f"--to {url}: expected an http://, https:// or kafka:// URL")


def transport_from_url(url: str, *, token: str | None = None, timeout: float = 10.0) -> Transport:
    """``http(s)://host:port[/prefix]`` or ``kafka://host:port[,host:port]/topic`` (the replay CLI)."""
    if check_url(url) == "kafka":
        parts = urlsplit(url)
        from .kafka import KafkaTransport

        return KafkaTransport(parts.netloc.split(","), parts.path.strip("/"))
    from .http import HttpTransport

    return HttpTransport(url, token=token, timeout=timeout)
