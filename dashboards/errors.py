"""Errors of the dashboards package::

    DriftlineError (driftline.errors)
    └── GrafanaError     Grafana refused (401/403/409/412/4xx/5xx) or could not be reached

The CLI prints the message on one line and exits 2.
"""

from __future__ import annotations

from driftline.errors import DriftlineError

__all__ = ["GrafanaError"]


class GrafanaError(DriftlineError):
    """Grafana refused or could not be reached; the message says which and what to do."""
