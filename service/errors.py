"""Typed errors of the service; the API turns each into a JSON error with a clear message.

    DriftlineError (driftline/errors.py)
    └── ServiceError
        ├── NotFound          (404) no such model, version, reference or canary
        ├── BadRequest        (400) a body or parameter that cannot be used
        ├── PayloadTooLarge   (413) a body over the configured limit
        ├── Unauthorized      (401) a missing or wrong bearer token
        ├── Forbidden         (403) a valid token that may not do this (a device writing as another)
        ├── LimitExceeded     (422) a new model, version, feature or cohort value past a configured cap
        ├── TooManyRequests   (429) over a rate limit; ``retry_after`` seconds
        ├── Unprocessable     (422) a valid envelope that can never be stored (permanent: not retried)
        └── StoreError        (503) the database failed; retriable
"""

from __future__ import annotations

from driftline.errors import DriftlineError

__all__ = ["BadRequest", "Forbidden", "LimitExceeded", "NotFound", "PayloadTooLarge", "ServiceError", "StoreError",
           "TooManyRequests", "Unauthorized", "Unprocessable"]


class ServiceError(DriftlineError):
    """Base of the service's errors; ``status`` is the HTTP status the API answers with."""

    status = 500
    retriable = False

    def __init__(self, message: str, detail: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class NotFound(ServiceError):
    status = 404


class BadRequest(ServiceError):
    status = 400


class PayloadTooLarge(ServiceError):
    status = 413


class Unauthorized(ServiceError):
    status = 401


class Forbidden(ServiceError):
    status = 403


class LimitExceeded(ServiceError):
    status = 422


class TooManyRequests(ServiceError):
    status = 429

    def __init__(self, message: str, retry_after: float, detail: object = None) -> None:
        super().__init__(message, detail)
        self.retry_after = retry_after


class Unprocessable(ServiceError):
    """Refused for good (say, totals that would overflow): retrying the same request cannot succeed."""

    status = 422


class StoreError(ServiceError):
    """The database failed; retriable. ``outage`` says it failed as a whole (disk full, out of memory,
    connection lost or server shutting down), so no single record is to blame: a caller retrying
    record by record must not take a record that failed this way for a poison one."""

    status = 503
    retriable = True

    def __init__(self, message: str, detail: object = None, *, outage: bool = False) -> None:
        super().__init__(message, detail)
        self.outage = outage
