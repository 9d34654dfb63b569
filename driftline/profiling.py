"""Build a profile from a data file: the glue the CLI's ``reference build`` and ``drift`` share."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from .datafiles import DataFile
from .errors import DataFileError
from .profile import ProfileConfig, StreamKey, WindowProfile

__all__ = ["profile_file"]


def profile_file(
    data: DataFile,
    key: StreamKey,
    config: ProfileConfig | None = None,
    *,
    outputs: Iterable[str] = (),
    exclude: Iterable[str] = (),
    on_progress: Callable[[int], None] | None = None,
    batch_rows: int = 65536,
) -> WindowProfile:
    """Profile every row of ``data``; columns named in ``outputs`` become model outputs.

    Column kinds come from the whole file when the reader knows them (pyarrow), so the first batch
    cannot decide them alone. The window is stamped [now, now) because training data has no
    serving time.
    """
    out_names = set(outputs)
    skip = set(exclude)
    now = time.time()
    prof = WindowProfile(key, now, now, config or ProfileConfig())
    prof.declare({k: v for k, v in data.kinds().items() if k not in skip}, out_names)
    seen_outputs: set[str] = set()
    for cols, done in data.batches(batch_rows):
        feats = {k: v for k, v in cols.items() if k not in out_names and k not in skip}
        outs = {k: v for k, v in cols.items() if k in out_names}
        seen_outputs.update(outs)
        prof.update(feats, outs or None)
        if on_progress:
            on_progress(done)
    missing = out_names - seen_outputs
    if missing and prof.rows:
        raise DataFileError(f"{data.path}: output column(s) not found: {', '.join(sorted(missing))}")
    return prof
