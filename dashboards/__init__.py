"""Grafana dashboards as code (grafana-foundation-sdk); the generated JSON is checked in beside it.

``python -m driftline.dashboards.generate`` rewrites the JSON; ``driftline dashboards push`` uploads it.
The JSON files ship with the package, so pushing needs neither the SDK nor a checkout.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DASHBOARDS", "JSON_DIR", "checked_in"]

DASHBOARDS = ("fleet", "model", "canary", "edge", "shadow")
JSON_DIR = Path(__file__).resolve().parent


def checked_in() -> dict[str, str]:
    """Dashboard name -> the JSON text shipped next to the code."""
    return {name: (JSON_DIR / f"{name}.json").read_text() for name in DASHBOARDS}
