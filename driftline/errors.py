"""Typed errors of the shared core.

Every error the core raises on purpose derives from :class:`DriftlineError`, so a shell (CLI,
sidecar, service) can catch one class and turn it into a one-line message, a counted signal or an
HTTP 4xx, never a traceback::

    DriftlineError
    ├── WireFormatError        bytes that are not a valid envelope (garbage, truncated, too big,
    │   └── UnsupportedVersionError      or a major format version this build cannot read)
    ├── ProfileError           a profile operation that cannot be done
    │   ├── SchemaConflictError    one column is numeric in one profile and categorical in another
    │   └── BatchError             a batch of observations that cannot be read at all
    ├── DataFileError          a training or log file that cannot be read (CLI input)
    │   └── GoldenSetError     a golden set (conformance inputs and outputs) that cannot be built or read
    ├── MissingExtraError      an optional dependency (an ``extra``) is not installed
    ├── ConfigError            invalid settings
    │   └── CanaryConfigError  an invalid canary configuration (also a ``ValueError``, so pydantic
    │                          reports it as a validation error that names the field)
    └── PerformanceError       a performance summary that cannot be built, read or merged
        └── LabelError         a label (or its prediction) that cannot be joined or folded

Each shell's own family derives from :class:`DriftlineError` too: ``driftline.service.errors.ServiceError``
and ``driftline.edge_sidecar.errors``.

``retriable`` says whether trying the same thing again can succeed (kafka-python's convention).
"""

from __future__ import annotations

__all__ = [
    "BatchError",
    "CanaryConfigError",
    "ConfigError",
    "DataFileError",
    "DriftlineError",
    "GoldenSetError",
    "LabelError",
    "MissingExtraError",
    "PerformanceError",
    "ProfileError",
    "SchemaConflictError",
    "UnsupportedVersionError",
    "WireFormatError",
]


class DriftlineError(Exception):
    """Base of every error Driftline raises on purpose."""

    retriable: bool = False


class WireFormatError(DriftlineError):
    """The bytes are not a valid Driftline envelope; the message says why."""


class UnsupportedVersionError(WireFormatError):
    """The envelope's major format version is newer than this build can read."""

    def __init__(self, major: int, supported: int) -> None:
        super().__init__(
            f"envelope format version {major}.x is not supported (this build reads {supported}.x); "
            "upgrade Driftline on the receiving side"
        )
        self.major = major
        self.supported = supported


class ProfileError(DriftlineError):
    """A profile operation that cannot be done."""


class SchemaConflictError(ProfileError):
    """The same column has different kinds (numeric vs categorical) in two profiles."""

    def __init__(self, column: str, left: str, right: str) -> None:
        super().__init__(f"column {column!r} is {left} in one profile and {right} in the other")
        self.column = column
        self.left = left
        self.right = right


class BatchError(ProfileError):
    """A batch of observations whose shape or container cannot be read at all."""


class DataFileError(DriftlineError):
    """A data or profile file that cannot be read."""


class MissingExtraError(DriftlineError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed; install it with: pip install 'driftline[{extra}]'")
        self.package = package
        self.extra = extra


class ConfigError(DriftlineError):
    """Settings that cannot be used; the message names the key."""


class CanaryConfigError(ConfigError, ValueError):
    """A canary configuration that cannot be used (the same family as drift's :class:`ConfigError`).

    Also a ``ValueError``: raised inside a pydantic dataclass, pydantic turns it into a validation
    error that names the field, as for a bad type or bound.
    """


class GoldenSetError(DataFileError):
    """A golden set that cannot be built or read (``driftline golden build``, the sidecar's conformance runs)."""


class PerformanceError(DriftlineError):
    """A performance summary that cannot be built, read or merged; the message says why."""


class LabelError(PerformanceError):
    """A delayed label (or the prediction it names) that cannot be used; ``reason`` is its counter."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason
