"""The Driftline edge sidecar: capture, sample, window, spool to disk, ship over HTTP or Kafka.

Three ways in, one windowing: the in-process SDK (:class:`Monitor`), the local HTTP API
(``POST /v1/observe``) and the Open Inference Protocol v2 reverse proxy. Closed windows are written
durably to a bounded disk spool and shipped at least once. See ``docs/sidecar.md``.

Names are imported on first use, so ``from driftline.edge_sidecar import Monitor`` does not load the
HTTP servers, Prometheus or Kafka.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ClosedWindow",
    "InferenceProxy",
    "LocalApi",
    "Monitor",
    "MonitorConfig",
    "Sampler",
    "Shipper",
    "Sidecar",
    "SidecarSettings",
    "Spool",
    "Windower",
    "load_settings",
]

_WHERE = {
    "ClosedWindow": "windowing",
    "InferenceProxy": "proxy",
    "LocalApi": "ingest_http",
    "Monitor": "monitor",
    "MonitorConfig": "monitorconfig",
    "Sampler": "sampling",
    "Shipper": "shipper",
    "Sidecar": "runner",
    "SidecarSettings": "settings",
    "Spool": "spool",
    "Windower": "windowing",
    "load_settings": "settings",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
