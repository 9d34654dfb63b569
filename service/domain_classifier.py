"""Domain-classifier drift drill-down: can a model tell reference rows from current rows, and by what?

Trained on the raw-row reservoirs (the reference's against the current range's merged windows),
a random forest (40 trees of depth <= 8: a drill-down, kept cheap) is scored by stratified 3-fold
cross-validated ROC AUC. Under H0 (both samples from
one distribution) the out-of-fold AUC is about that of a random ranking: mean 0.5, variance
``(n_r + n_c + 1) / (12 n_r n_c)`` (the Mann-Whitney statistic's). Drift is flagged when the AUC
exceeds ``0.5 + z * sqrt(var)`` (``z = 3``) *and* ``min_auc`` (0.55 by default: a real but tiny
shift is not worth a page). The forest refit on all rows then names the features that separate
the two samples, by mean impurity decrease.

Numeric columns are used as they are (missing values become the reference median); categorical
columns are coded by their frequency in the pooled sample, so a new category separates. The
``output:`` columns of the reservoir are left out: they answer a different question.

scikit-learn is an optional dependency (the ``drilldown`` extra); it is imported when a drill-down
runs, so the service starts and serves everything else without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BadRequest

__all__ = ["DomainResult", "domain_classifier"]

MIN_ROWS = 50
"""Rows each side needs before a classifier is trained."""
MAX_ROWS = 5000
"""Rows per side the classifier trains on (a seeded uniform subsample beyond): bounds a request's CPU."""


@dataclass(frozen=True)
class DomainResult:
    """The drill-down verdict: cross-validated AUC against its bound, and features by importance."""

    auc: float
    bound: float
    drift_detected: bool
    reference_rows: int
    current_rows: int
    folds: int
    importances: tuple[tuple[str, float], ...]  # (feature, importance), most important first

    def to_dict(self) -> dict[str, Any]:
        return {"method": "domain_classifier", "model": "random_forest", "roc_auc": round(self.auc, 6),
                "bound": round(self.bound, 6), "drift_detected": self.drift_detected,
                "reference_rows": self.reference_rows, "current_rows": self.current_rows, "folds": self.folds,
                "features": [{"name": n, "importance": round(v, 6)} for n, v in self.importances]}


def _sklearn() -> Any:
    try:
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedKFold, cross_val_predict
    except ImportError:
        raise BadRequest("scikit-learn is not installed on the service",
                         "install it with: pip install 'driftline[drilldown]'") from None
    return RandomForestClassifier, StratifiedKFold, cross_val_predict, roc_auc_score


def _matrix(ref: Sequence[Mapping[str, Any]], cur: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, list[str]]:
    names = sorted({k for r in ref for k in r if not k.startswith("output:")}
                   & {k for r in cur for k in r if not k.startswith("output:")})
    rows = list(ref) + list(cur)
    cols = []
    kept = []
    for name in names:
        vals = [r.get(name) for r in rows]
        if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in vals):
            arr = np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)
            arr[~np.isfinite(arr)] = np.nan
            ref_part = arr[: len(ref)]
            fill = float(np.nanmedian(ref_part)) if np.isfinite(ref_part).any() else 0.0
            arr[np.isnan(arr)] = fill
        else:
            labels = ["\0missing" if v is None else str(v) for v in vals]
            uniq, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
            arr = (counts / len(labels))[inv].astype(np.float64)
        if np.ptp(arr) > 0:
            cols.append(arr)
            kept.append(name)
    if not cols:
        raise BadRequest("the reservoirs share no feature with any spread", "nothing to train a classifier on")
    return np.column_stack(cols), kept


def domain_classifier(reference_rows: Sequence[Mapping[str, Any]], current_rows: Sequence[Mapping[str, Any]], *,
                      folds: int = 3, z: float = 3.0, min_auc: float = 0.55, seed: int = 0,
                      trees: int = 40) -> DomainResult:
    """Train reference-vs-current on raw rows; cross-validated ROC AUC, its H0 bound, feature importances."""
    rng = np.random.default_rng(seed)
    if len(reference_rows) > MAX_ROWS:
        reference_rows = [reference_rows[i] for i in sorted(rng.choice(len(reference_rows), MAX_ROWS, replace=False))]
    if len(current_rows) > MAX_ROWS:
        current_rows = [current_rows[i] for i in sorted(rng.choice(len(current_rows), MAX_ROWS, replace=False))]
    n_r, n_c = len(reference_rows), len(current_rows)
    if min(n_r, n_c) < MIN_ROWS:
        raise BadRequest(f"the domain classifier needs {MIN_ROWS} sample rows on each side, "
                         f"got {n_r} reference and {n_c} current",
                         "keep raw rows: reference build --reservoir N, and the sidecar's profile.reservoir_size")
    forest, skf, cv_predict, roc_auc = _sklearn()
    x, names = _matrix(reference_rows, current_rows)
    y = np.r_[np.zeros(n_r), np.ones(n_c)]
    clf = forest(n_estimators=trees, max_depth=8, min_samples_leaf=5, random_state=seed, n_jobs=1)
    k = max(2, min(folds, n_r, n_c))
    proba = cv_predict(clf, x, y, cv=skf(n_splits=k, shuffle=True, random_state=seed), method="predict_proba")[:, 1]
    auc = float(roc_auc(y, proba))
    bound = max(min_auc, 0.5 + z * math.sqrt((n_r + n_c + 1) / (12.0 * n_r * n_c)))
    clf.fit(x, y)
    imp = sorted(zip(names, (float(v) for v in clf.feature_importances_), strict=True), key=lambda t: (-t[1], t[0]))
    return DomainResult(auc, bound, auc > bound, n_r, n_c, k, tuple(imp))
