"""Typed errors of the edge sidecar.

Everything the sidecar raises on purpose derives from :class:`SidecarError`, itself a
:class:`~driftline.errors.DriftlineError`, so the CLI prints one line and exits 2::

    DriftlineError
    └── SidecarError
        ├── SettingsError          the YAML file or a DRIFTLINE_* variable cannot be used
        ├── ObserveError           input the monitor cannot use (raised only with ``strict=True``;
        │                          otherwise it becomes a counted rejection with a ``reason``)
        ├── SpoolError             the spool directory cannot be read or written
        ├── TransportError         a delivery attempt failed and may succeed later (``retriable``)
        │   └── DeliveryRejected   the receiver refused the envelope for good (4xx): never retried
        └── CaptureError           an inference request/response the proxy cannot turn into rows

``retriable`` says whether sending the same thing again can succeed (kafka-python's convention);
``maybe_delivered`` says whether the receiver may have stored it anyway (a timeout after sending),
which keeps the spool from merging a window whose envelope id the service may already hold.
"""

from __future__ import annotations

from driftline.errors import ConfigError, DriftlineError

__all__ = [
    "REJECT_REASONS",
    "CaptureError",
    "DeliveryRejected",
    "ObserveError",
    "SettingsError",
    "SidecarError",
    "SpoolError",
    "TransportError",
]

REJECT_REASONS = ("malformed", "wrong_type", "oversized", "unknown_model", "overloaded")
"""Values of the ``reason`` label of ``driftline_sidecar_rejected_total``."""


class SidecarError(DriftlineError):
    """Base of every error the sidecar raises on purpose."""


class SettingsError(SidecarError, ConfigError):
    """Settings that cannot be used; the message names the file, key or variable."""


class ObserveError(SidecarError):
    """An observation the monitor cannot use; ``reason`` is one of :data:`REJECT_REASONS`."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason if reason in REJECT_REASONS else "malformed"


class CaptureError(ObserveError):
    """An Open Inference Protocol request or response the proxy cannot read as rows."""


class SpoolError(SidecarError):
    """The spool directory cannot be read or written (permissions, disk full, corrupt file)."""


class TransportError(SidecarError):
    """A delivery attempt that failed but may succeed later."""

    retriable = True

    def __init__(self, message: str, *, maybe_delivered: bool = False, attempted: bool = True) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered
        self.attempted = attempted


class DeliveryRejected(TransportError):
    """The receiver refused the envelope (a 4xx other than 408/429): moved aside, never retried."""

    retriable = False

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message, maybe_delivered=False)
        self.status = status
