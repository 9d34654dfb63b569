"""Evidently drill-down reports from raw-row reservoirs (the ``reports`` extra)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from driftline.profile import WindowProfile

from .errors import BadRequest

__all__ = ["render_evidently_report"]


def render_evidently_report(reference: WindowProfile, current: WindowProfile | None) -> str:
    """HTML of an Evidently DataDriftPreset report; a clear error when it cannot be made."""
    if reference.reservoir is None or not reference.reservoir.rows:
        raise BadRequest("the reference has no raw-row sample",
                         "build it with a reservoir (ProfileConfig(reservoir_size=...)) to enable reports")
    if current is None or current.reservoir is None or not current.reservoir.rows:
        raise BadRequest("no raw-row sample in the current window",
                         "enable the sidecar's reservoir (profile.reservoir_size) to enable reports")
    try:
        import pandas as pd
        from evidently import Report
        from evidently.presets import DataDriftPreset
    except ImportError:
        raise BadRequest("Evidently is not installed on the service",
                         "install it with: pip install 'driftline[reports]'") from None
    ref_df = pd.DataFrame(reference.reservoir.rows)
    cur_df = pd.DataFrame(current.reservoir.rows)
    common = [c for c in ref_df.columns if c in cur_df.columns]
    snapshot = Report([DataDriftPreset()]).run(cur_df[common], ref_df[common])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.html"
        snapshot.save_html(str(path))
        return path.read_text()
