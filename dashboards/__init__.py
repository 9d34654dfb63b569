"""Grafana dashboards as code (grafana-foundation-sdk); the generated JSON is checked in beside it.

``python -m driftline.dashboards.generate`` rewrites the JSON; ``driftline dashboards push`` uploads it.
"""

from __future__ import annotations

__all__ = ["DASHBOARDS"]

DASHBOARDS = ("fleet", "model", "canary", "edge")
