"""Build a profile from a data file: the glue the CLI's ``reference build`` and ``drift`` share."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from .datafiles import DataFile
from .errors import DataFileError
from .profile import ProfileConfig, StreamKey, WindowProfile
from .reconstruction import DEFAULT_VARIANCE, ErrorSketch, ReconstructionFitter, numeric_scaling

__all__ = ["attach_reconstruction", "profile_file"]


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


def calibrate_file(data: DataFile, prof: WindowProfile, score: str | None, label: str, *, threshold: float = 0.5,
                   positive: str = "1", bins: int = 64, batch_rows: int = 65536) -> dict[str, object]:
    """Fit the score calibration of ``prof`` (a reference just profiled from ``data``) on its labels.

    A second pass over the file folds (score, label) into quantile bins of the profile's own score
    sketch (bounded memory); returns the calibration's dict form, for ``prof.calibration``.
    ``score`` defaults to the profile's only numeric output.
    """
    from .columns import NumericColumn
    from .estimate import CalibrationBuilder, EstimateError

    numeric = [k for k, c in prof.outputs.items() if isinstance(c, NumericColumn)]
    if score is None:
        if len(numeric) != 1:
            raise DataFileError(f"--label needs --score: the outputs have {len(numeric)} numeric columns "
                                f"({', '.join(numeric) or 'none'})")
        score = numeric[0]
    if score not in numeric:
        raise DataFileError(f"score column {score!r} is not a numeric output (outputs: {', '.join(prof.outputs)})")
    col = prof.outputs[score]
    assert isinstance(col, NumericColumn)
    try:
        builder = CalibrationBuilder.from_column(score, col, bins, threshold=threshold, positive=positive,
                                                 label=label)
        seen = False
        for cols, _ in data.batches(batch_rows):
            if label not in cols or score not in cols:
                continue
            seen = True
            builder.update(cols[score], cols[label])
        if not seen and prof.rows:
            raise DataFileError(f"{data.path}: label column {label!r} not found")
        return builder.fit().to_dict()
    except EstimateError as exc:
        raise DataFileError(f"{data.path}: {exc}") from None


def attach_reconstruction(data: DataFile, prof: WindowProfile, *, variance: float = DEFAULT_VARIANCE,
                          batch_rows: int = 65536) -> WindowProfile:
    """Fit a reconstruction model on ``data``'s numeric features and keep it, with the reference's own
    per-row errors, in ``prof.reconstruction`` (``docs/statistics.md``); returns ``prof``.

    Two more passes over the file: the profile's columns already hold each feature's exact mean and
    standard deviation, the first pass sums the standardised Gram matrix, the second sketches every
    row's cross-fitted error (docs/statistics.md). Categorical features, outputs and constant features are left out.
    """
    names, mean, scale = numeric_scaling(prof.features)
    if not names:
        raise DataFileError(f"{data.path}: no numeric feature with spread to fit a reconstruction model on")
    fitter = ReconstructionFitter(names, mean, scale)
    for cols, _done in data.batches(batch_rows):
        fitter.update(cols, _rows(cols))
    model = fitter.model(variance)
    sketch = ErrorSketch(model.digest, model=model.to_bytes())
    for cols, _done in data.batches(batch_rows):
        sketch.update(fitter.reference_errors(cols, _rows(cols)))
    prof.reconstruction = sketch
    return prof


def _rows(cols: dict) -> int:  # type: ignore[type-arg]
    return len(next(iter(cols.values()))) if cols else 0
