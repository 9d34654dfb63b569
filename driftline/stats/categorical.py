"""Drift scores for categorical columns, from frequent-items sketches.

Category counts are the sketches' guaranteed lower bounds, exact while a column has fewer distinct
values than the sketch holds (``max_error == 0``; 768 values at the default size). Past that,
the unretained remainder of each side is pooled into one ``other`` category, so the totals stay exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..columns import CategoricalColumn
from .distributions import chi2_sf
from .divergence import jensen_shannon, psi, tvd

__all__ = ["CategoricalScores", "categorical_scores", "exact_categorical_scores"]

OTHER = "\x00other"


@dataclass(frozen=True, slots=True)
class CategoricalScores:
    """Scores of one categorical column."""

    chi2: float
    chi2_p_value: float
    tvd: float
    jensen_shannon: float
    psi: float
    new_category_rate: float
    new_categories: list[str]
    n_ref: int
    n_cur: int
    exact: bool

    def as_dict(self) -> dict[str, float]:
        return {
            "chi2": self.chi2,
            "chi2_p_value": self.chi2_p_value,
            "tvd": self.tvd,
            "jensen_shannon": self.jensen_shannon,
            "psi": self.psi,
            "new_category_rate": self.new_category_rate,
        }


def _counts(col: CategoricalColumn) -> dict[str, int]:
    freqs = col.frequencies()
    rest = col.count - sum(freqs.values())
    if rest > 0:
        freqs[OTHER] = freqs.get(OTHER, 0) + rest
    return freqs


def _from_counts(ref: dict[str, int], cur: dict[str, int], exact: bool) -> CategoricalScores:
    cats = sorted(set(ref) | set(cur))
    r = np.array([ref.get(c, 0) for c in cats], dtype=np.float64)
    c = np.array([cur.get(c, 0) for c in cats], dtype=np.float64)
    n_r, n_c = r.sum(), c.sum()
    p, q = r / n_r, c / n_c
    # chi-square test of homogeneity on the 2 x K table
    table = np.vstack((r, c))
    expected = table.sum(axis=0, keepdims=True) * table.sum(axis=1, keepdims=True) / table.sum()
    keep = expected.sum(axis=0) > 0
    chi2 = float(np.sum((table[:, keep] - expected[:, keep]) ** 2 / expected[:, keep]))
    dof = int(keep.sum()) - 1
    p_value = chi2_sf(chi2, dof) if dof > 0 else 1.0
    new = [k for k in cats if ref.get(k, 0) == 0 and cur.get(k, 0) > 0 and k != OTHER]
    new_rate = float(sum(cur[k] for k in new) / n_c)
    return CategoricalScores(
        chi2=chi2, chi2_p_value=p_value, tvd=tvd(p, q), jensen_shannon=jensen_shannon(p, q), psi=psi(p, q),
        new_category_rate=new_rate, new_categories=new[:20], n_ref=int(n_r), n_cur=int(n_c), exact=exact,
    )


def categorical_scores(ref: CategoricalColumn, cur: CategoricalColumn) -> CategoricalScores:
    """All categorical drift scores of ``cur`` against ``ref`` (both must have values)."""
    return _from_counts(_counts(ref), _counts(cur), exact=ref.max_error == 0 and cur.max_error == 0)


def exact_categorical_scores(ref: np.ndarray, cur: np.ndarray) -> dict[str, float]:
    """The same scores from raw label arrays."""
    ru, rc = np.unique(np.asarray(ref).astype(str), return_counts=True)
    cu, cc = np.unique(np.asarray(cur).astype(str), return_counts=True)
    s = _from_counts(dict(zip(ru.tolist(), rc.tolist(), strict=True)),
                     dict(zip(cu.tolist(), cc.tolist(), strict=True)), exact=True)
    out = s.as_dict()
    out["chi2_p_value"] = s.chi2_p_value if math.isfinite(s.chi2_p_value) else 1.0
    return out
