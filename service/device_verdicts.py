"""What each device said about its own drift, next to what the service computes.

A sidecar with ``judge.enabled`` attaches a small verdict to every window it closes (``verdict`` in
docs/wire-format.md). The verdict is stored with the window at ingest, in the same row and the same
transaction, so it survives a restart, is the same on every replica, and ages out with the window.
:func:`latest_device_verdict` picks the newest one among a device's windows for
``GET /v1/models/{model}/devices`` and the status page.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from driftline.profile import WindowProfile

__all__ = ["latest_device_verdict"]


def latest_device_verdict(profiles: Iterable[WindowProfile]) -> dict[str, Any] | None:
    """The verdict of the newest window (by end) that carries one, with that window's range; else None."""
    best: WindowProfile | None = None
    for p in profiles:
        if p.verdict is not None and (best is None or p.end >= best.end):
            best = p
    if best is None or best.verdict is None:
        return None
    return {**best.verdict, "window_start": best.start, "window_end": best.end}
