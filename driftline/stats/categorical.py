"""Drift scores for categorical columns, from frequent-items sketches.

A frequent-items sketch knows each retained category's count within ``[lower, lower + error]`` and
any other category's within ``[0, error]``; ``error`` is 0 (every count exact) while a column has
fewer distinct values than the sketch holds (768 at the default size). The scores are computed on
the *least different* pair of count tables those bounds allow: per category, where the two sides'
intervals (as shares) overlap both get the same share, otherwise each gets its end nearest the other.
Rows the sketches did not list are pooled into one ``other`` category per side. With exact sketches
this is simply the true table; past capacity it can hide drift but never invent it (two
high-cardinality samples of one distribution retain different categories, and naive lower bounds
would make that look like drift).

What the pooled ``other`` hides, values the reference never had, comes from the columns' coordinated
distinct samples (:mod:`driftline.distinct`): the share of current rows on unseen values beyond what
sampling explains (Good-Turing), less 3 standard errors, is a lower bound of the TVD (the rows on
those values have no counterpart in the reference), and its z-test joins the chi-square test
(Bonferroni: the smaller p-value, doubled). So a vocabulary swapped for another is drift at any
cardinality, while ids unique per row (new in every sample) are not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..columns import CategoricalColumn
from ..distinct import UnseenMass, unseen_mass
from .distributions import chi2_sf, norm_sf
from .divergence import hellinger, jensen_shannon, psi, tvd

__all__ = [
    "CategoricalScores",
    "CategoryCounts",
    "categorical_scores",
    "category_counts",
    "exact_categorical_scores",
]

OTHER = "\x00other"
CATEGORICAL_METHODS = ("tvd", "psi", "jensen_shannon", "hellinger")


@dataclass(frozen=True, slots=True)
class CategoryCounts:
    """Lower bounds of the listed categories' counts, the shared under-count bound, and the exact total."""

    counts: Mapping[str, int]
    error: int
    n: int


def category_counts(col: CategoricalColumn) -> CategoryCounts:
    """What a column's sketch knows about its category counts."""
    return CategoryCounts(col.frequencies(), col.max_error, col.count)


def unseen_excess(ref: CategoricalColumn, cur: CategoricalColumn) -> UnseenMass | None:
    """The distinct samples' verdict on values the reference never had (None without samples)."""
    if ref.ds is None or cur.ds is None:
        return None
    return unseen_mass(ref.ds, cur.ds, ref.count, cur.count)


@dataclass(frozen=True, slots=True)
class CategoricalScores:
    """Scores of one categorical column (``exact`` when both sketches know every count)."""

    chi2: float
    chi2_p_value: float
    tvd: float
    jensen_shannon: float
    psi: float
    hellinger: float
    new_category_rate: float
    new_categories: list[str]
    count_error: float
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
            "hellinger": self.hellinger,
            "new_category_rate": self.new_category_rate,
            "count_error": self.count_error,
        }


def _least_different(ref: CategoryCounts, cur: CategoryCounts) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Category labels and the two count rows (last column ``other`` when any row is unlisted)."""
    cats = sorted(set(ref.counts) | set(cur.counts))
    r_lo = np.array([ref.counts.get(k, 0) for k in cats], dtype=np.float64)
    c_lo = np.array([cur.counts.get(k, 0) for k in cats], dtype=np.float64)
    if ref.error == 0 and cur.error == 0:
        r, c = r_lo, c_lo
    else:
        pl, ph = r_lo / ref.n, (r_lo + ref.error) / ref.n
        ql, qh = c_lo / cur.n, (c_lo + cur.error) / cur.n
        lo, hi = np.maximum(pl, ql), np.minimum(ph, qh)
        overlap = lo <= hi
        mid = 0.5 * (lo + hi)
        p = np.where(overlap, mid, np.where(pl > qh, pl, ph))
        q = np.where(overlap, mid, np.where(pl > qh, qh, ql))
        r, c = p * ref.n, q * cur.n
    r_other, c_other = max(ref.n - float(r.sum()), 0.0), max(cur.n - float(c.sum()), 0.0)
    if r_other > 1e-9 * ref.n or c_other > 1e-9 * cur.n:
        cats.append(OTHER)
        r, c = np.append(r, r_other), np.append(c, c_other)
    return cats, r, c


def scores_from_counts(ref: CategoryCounts, cur: CategoryCounts, unseen: UnseenMass | None = None) -> CategoricalScores:
    """Every categorical score from the two sides' count bounds (shared by sketches and raw data).

    ``unseen`` (from the distinct samples) adds the rows that provably moved to values the
    reference never had, which the count bounds alone pool into ``other``.
    """
    cats, r, c = _least_different(ref, cur)
    p, q = r / r.sum(), c / c.sum()
    # chi-square test of homogeneity on the 2 x K table
    table = np.vstack((r, c))
    expected = table.sum(axis=0, keepdims=True) * table.sum(axis=1, keepdims=True) / table.sum()
    keep = expected[0] > 0
    chi2 = float(np.sum((table[:, keep] - expected[:, keep]) ** 2 / expected[:, keep]))
    dof = int(keep.sum()) - 1
    p_value = chi2_sf(chi2, dof) if dof > 0 else 1.0
    tvd_v = tvd(p, q)
    if unseen is not None and (ref.error or cur.error):  # exact tables list every new value already
        z = (unseen.current - unseen.expected) / unseen.se if unseen.se > 0 else (
            math.inf if unseen.current > unseen.expected else 0.0)
        p_value = min(1.0, 2.0 * min(p_value, norm_sf(z)))
        tvd_v = max(tvd_v, unseen.excess)
    # new only where the reference provably never had it: its sketch is exact and does not list it
    new = [k for k in cats if k != OTHER and ref.error == 0 and k not in ref.counts and cur.counts.get(k, 0) > 0]
    new.sort(key=lambda k: -cur.counts[k])
    return CategoricalScores(
        chi2=chi2, chi2_p_value=p_value, tvd=tvd_v, jensen_shannon=jensen_shannon(p, q), psi=psi(p, q),
        hellinger=hellinger(p, q),
        new_category_rate=max(sum(cur.counts[k] for k in new) / cur.n,
                              unseen.excess if unseen is not None and (ref.error or cur.error) else 0.0),
        new_categories=new[:20], count_error=max(ref.error / ref.n, cur.error / cur.n),
        n_ref=ref.n, n_cur=cur.n, exact=ref.error == 0 and cur.error == 0,
    )


def categorical_scores(ref: CategoricalColumn, cur: CategoricalColumn) -> CategoricalScores:
    """All categorical drift scores of ``cur`` against ``ref`` (both must have values)."""
    return scores_from_counts(category_counts(ref), category_counts(cur), unseen_excess(ref, cur))


def exact_categorical_scores(ref: np.ndarray, cur: np.ndarray) -> dict[str, float]:
    """The same scores from raw label arrays."""
    sides = []
    for arr in (ref, cur):
        u, n = np.unique(np.asarray(arr).astype(str), return_counts=True)
        sides.append(CategoryCounts(dict(zip(u.tolist(), n.tolist(), strict=True)), 0, int(n.sum())))
    return scores_from_counts(sides[0], sides[1]).as_dict()
