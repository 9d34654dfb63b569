"""Errors of the test harness.

    HarnessError                 a server did not start, stop or answer in time
    └── MissingDependencyError   a binary or jar the harness needs is not installed

The message always says what failed and, where there is one, ends with the tail of the server log
or the install step that is missing.
"""

from __future__ import annotations

__all__ = ["HarnessError", "MissingDependencyError"]


class HarnessError(RuntimeError):
    """A real server used by the tests misbehaved (start, stop or readiness failed)."""


class MissingDependencyError(HarnessError):
    """Something the tests need is not installed; the message names the install step."""
