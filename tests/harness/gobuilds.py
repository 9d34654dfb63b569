"""Waiting for the Go builds that scripts/test.sh runs in the background.

helm, tests/k8s-validate and tests/controllers compile about 1,600 Go packages on a cold cache, so
scripts/test.sh builds them while pytest runs everything else and says where it will write the
build's exit code (``$DRIFTLINE_GO_BUILDS``). Tests that need those binaries run last
(tests/conftest.py) and call :func:`wait_for_go_builds` first; their own ``go build`` is then a
cache hit. Outside scripts/test.sh the variable is unset and nothing waits.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

__all__ = ["GO_BUILDS_MODULES", "GO_BUILDS_WAIT_S", "wait_for_go_builds"]

GO_BUILDS_MODULES = ("test_helm.py", "test_controllers.py")
"""Test modules that need the background Go builds; the suite runs them last."""

GO_BUILDS_WAIT_S = 2400.0
"""How long a test waits for the background Go builds (a cold cache on a busy 2-core machine: tens of minutes)."""

_STATUS = os.environ.get("DRIFTLINE_GO_BUILDS")  # read at import, before tests scrub DRIFTLINE_*


def wait_for_go_builds(timeout_s: float = GO_BUILDS_WAIT_S) -> None:
    """Block (bounded) until the background Go builds have finished; fail the test if they failed."""
    if not _STATUS:
        return
    status = Path(_STATUS)
    deadline = time.monotonic() + timeout_s
    while not status.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"the background Go builds did not finish within {timeout_s:.0f} s ({status})", pytrace=False)
        time.sleep(2)
    code = status.read_text().strip()
    if code != "0":
        log = status.with_name("go-builds.log")
        tail = log.read_text()[-3000:] if log.exists() else "(no log)"
        pytest.fail(f"the background Go builds failed (exit {code}):\n{tail}", pytrace=False)
