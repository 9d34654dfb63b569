"""Data-quality and training-serving-skew signals: each its own finding, never folded into drift.

Signals: ``missing_rate_jump`` (missing + NaN share up), ``inf_values`` (infinities appear),
``invalid_values`` (wrong-typed values appear), ``out_of_range`` (share of values outside the
reference's [min, max]), ``constant`` (a column that varied in the reference is constant now),
``missing_column`` (in the reference, absent in production), ``new_column`` (in production only),
``type_change`` (numeric in one, categorical in the other) and ``new_categories``.

A column with nothing but missing values has no kind of its own: numeric on one side and all
missing on the other is a ``missing_rate_jump``, not a ``type_change``. Current data without rows
(a header-only file) is ``insufficient_data`` for every column, not ``missing_column``.

``out_of_range`` is a test, not a fixed share: with no drift, the number of ``n_cur`` current values
outside the range of ``n_ref`` reference values is beta-binomial(``n_cur``, 2, ``n_ref - 1``) (the
mass outside the sample range of ``n_ref`` continuous values is Beta(2, ``n_ref - 1``), mean
``2 / (n_ref + 1)``). The signal fires when the count outside exceeds that distribution's
``1 - OUT_OF_RANGE_ALPHA`` quantile *and* the share exceeds ``out_of_range_tolerance``. At 285 rows a
side that needs about 5% of values outside; at 10^5 and more it is the tolerance (1%) alone.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..columns import CategoricalColumn, Column, NumericColumn
from ..profile import has_typed_values
from .decision import DriftConfig

__all__ = ["OUT_OF_RANGE_ALPHA", "SIGNALS", "Issue", "column_issues", "missing_ratio", "out_of_range_limit",
           "schema_issues"]

OUT_OF_RANGE_ALPHA = 1e-3
"""Chance that one column of a no-drift comparison crosses the out-of-range noise limit."""

SIGNALS = (
    "missing_rate_jump",
    "inf_values",
    "invalid_values",
    "out_of_range",
    "constant",
    "missing_column",
    "new_column",
    "type_change",
    "new_categories",
)

Issue = dict[str, Any]


def _present_rows(col: Column) -> int:
    return col.rows - col.absent


def missing_ratio(col: Column) -> float:
    """Share of rows where the column was present but had no usable value (null or NaN)."""
    rows = _present_rows(col)
    if rows <= 0:
        return 0.0
    missing = col.missing + (col.nan if isinstance(col, NumericColumn) else 0)
    return missing / rows


def _ratio(part: int, col: Column) -> float:
    rows = _present_rows(col)
    return part / rows if rows > 0 else 0.0


def column_issues(name: str, ref: Column, cur: Column, cfg: DriftConfig, new_category_rate: float = 0.0,
                  new_categories: list[str] | None = None, role: str = "feature",
                  shares_outside: tuple[float, float] | None = None) -> list[Issue]:
    """Quality findings for one column present on both sides with the same kind.

    ``shares_outside``: the current's shares strictly below ``ref.min`` and above ``ref.max``, when
    the numeric scores already read them off the current's step CDF (else asked of its sketch).
    """
    found: list[Issue] = []
    m_ref, m_cur = missing_ratio(ref), missing_ratio(cur)
    if _present_rows(cur) >= cfg.min_rows and m_cur - m_ref > cfg.missing_rate_tolerance:
        found.append({"column": name, "signal": "missing_rate_jump",
                      "reference": round(m_ref, 6), "current": round(m_cur, 6)})
    if isinstance(ref, NumericColumn) and isinstance(cur, NumericColumn):
        i_ref, i_cur = _ratio(ref.inf, ref), _ratio(cur.inf, cur)
        if cur.inf and i_cur > i_ref:
            found.append({"column": name, "signal": "inf_values", "reference": i_ref, "current": i_cur})
        if ref.count >= 2 and cur.count:
            if shares_outside is None:
                pts = np.array([ref.min, ref.max], dtype=np.float64)
                below = float(cur.kll.get_cdf(pts[:1], inclusive=False)[0])  # share strictly below ref.min
                above = 1.0 - float(cur.kll.get_cdf(pts[1:], inclusive=True)[0])  # share strictly above ref.max
            else:
                below, above = shares_outside
            outside = max(below, 0.0) + max(above, 0.0)
            if cur.min < ref.min or cur.max > ref.max:
                outside = max(outside, 1.0 / cur.count)
            else:
                outside = 0.0
            limit = max(cfg.out_of_range_tolerance, out_of_range_limit(ref.count, cur.count))
            if outside > limit:
                found.append({"column": name, "signal": "out_of_range", "current": round(outside, 6),
                              "limit": round(limit, 6),
                              "reference_min": ref.min, "reference_max": ref.max,
                              "current_min": cur.min, "current_max": cur.max})
        if cur.count >= cfg.min_rows and cur.min == cur.max and ref.min != ref.max:
            found.append({"column": name, "signal": "constant", "value": cur.min})
    elif isinstance(ref, CategoricalColumn) and isinstance(cur, CategoricalColumn):
        if cur.count >= cfg.min_rows and cur.distinct < 1.5 and ref.distinct >= 1.5:
            only = next(iter(cur.frequencies()), None)
            found.append({"column": name, "signal": "constant", "value": only})
        if new_category_rate > 0:
            found.append({"column": name, "signal": "new_categories", "current": round(new_category_rate, 6),
                          "examples": list(new_categories or [])[:5]})
    v_ref, v_cur = _ratio(ref.invalid, ref), _ratio(cur.invalid, cur)
    if cur.invalid and v_cur > v_ref:
        found.append({"column": name, "signal": "invalid_values", "reference": v_ref, "current": v_cur})
    return [{"column": i.pop("column"), "role": role, **i} for i in found]


@functools.lru_cache(maxsize=4096)  # pure in its three numbers; a report's columns mostly share their row counts
def out_of_range_limit(n_ref: int, n_cur: int, alpha: float = OUT_OF_RANGE_ALPHA) -> float:
    """The share of ``n_cur`` current values outside the reference range that chance exceeds with
    probability below ``alpha`` when nothing drifted (see the module docstring).

    The ``1 - alpha`` quantile ``k`` of beta-binomial(n_cur, 2, n_ref - 1), divided by ``n_cur``.

    Examples
    --------
    >>> round(out_of_range_limit(285, 285), 3) > 0.03 > round(out_of_range_limit(100_000, 100_000), 5)
    True
    """
    if n_ref < 2 or n_cur < 1:
        return 1.0
    a, b, n = 2.0, float(n_ref - 1), int(n_cur)
    log_p0 = math.lgamma(n + b) + math.lgamma(a + b) - math.lgamma(n + a + b) - math.lgamma(b)
    target = 1.0 - alpha
    total, log_p, k0, chunk = 0.0, log_p0, 0, 4096
    while k0 <= n:
        k = np.arange(k0, min(k0 + chunk, n + 1), dtype=np.float64)
        # log pmf(k) = log pmf(k0) + sum of log ratios pmf(j+1)/pmf(j) for j in [k0, k)
        ratios = np.log((n - k[:-1]) / (k[:-1] + 1.0)) + np.log((k[:-1] + a) / (n - k[:-1] - 1.0 + b))
        logs = log_p + np.concatenate(([0.0], np.cumsum(ratios)))
        cdf = total + np.cumsum(np.exp(logs))
        hit = np.flatnonzero(cdf >= target)
        if hit.size:
            return float(k[hit[0]]) / n
        total = float(cdf[-1])
        j = k[-1]
        if j >= n:
            break
        log_p = float(logs[-1] + math.log((n - j) / (j + 1.0)) + math.log((j + a) / (n - j - 1.0 + b)))
        k0 += k.size
    return 1.0


def schema_issues(ref: Mapping[str, Column], cur: Mapping[str, Column], role: str,
                  current_rows: int | None = None) -> list[Issue]:
    """Columns missing from or added to production, and columns whose kind changed.

    With ``current_rows == 0`` (no current data at all) nothing is missing: every column is just
    short of data. A side with nothing but missing values has no kind, so it is no type change.
    """
    found: list[Issue] = []
    for name, col in ref.items():
        other = cur.get(name)
        if current_rows == 0 or (other is not None and other.rows == 0):
            continue
        if other is None or _present_rows(other) == 0:
            found.append({"column": name, "role": role, "signal": "missing_column"})
        elif other.kind != col.kind and has_typed_values(other) and has_typed_values(col):
            found.append({"column": name, "role": role, "signal": "type_change",
                          "reference": col.kind, "current": other.kind})
    for name in cur:
        if name not in ref:
            found.append({"column": name, "role": role, "signal": "new_column"})
    return found
