"""Real infrastructure for the tests: Kafka, PostgreSQL, Prometheus and Alertmanager on loopback.

Every server here runs as a child process bound to 127.0.0.1 on a free port, with its state in a
directory the caller owns, and every wait is bounded. Fixtures in ``tests/conftest.py`` wrap them.
"""

from __future__ import annotations

from tests.harness.errors import HarnessError, MissingDependencyError
from tests.harness.ports import free_port, wait_for_port

__all__ = ["HarnessError", "MissingDependencyError", "free_port", "wait_for_port"]
