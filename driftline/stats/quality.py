"""Data-quality and training-serving-skew signals: each its own finding, never folded into drift.

Signals: ``missing_rate_jump`` (missing + NaN share up), ``inf_values`` (infinities appear),
``invalid_values`` (wrong-typed values appear), ``out_of_range`` (share of values outside the
reference's [min, max]), ``constant`` (a column that varied in the reference is constant now),
``missing_column`` (in the reference, absent in production), ``new_column`` (in production only),
``type_change`` (numeric in one, categorical in the other) and ``new_categories``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..columns import CategoricalColumn, Column, NumericColumn
from .decision import DriftConfig

__all__ = ["SIGNALS", "Issue", "column_issues", "missing_ratio", "schema_issues"]

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
                  new_categories: list[str] | None = None, role: str = "feature") -> list[Issue]:
    """Quality findings for one column present on both sides with the same kind."""
    found: list[Issue] = []
    m_ref, m_cur = missing_ratio(ref), missing_ratio(cur)
    if _present_rows(cur) >= cfg.min_rows and m_cur - m_ref > cfg.missing_rate_tolerance:
        found.append({"column": name, "signal": "missing_rate_jump",
                      "reference": round(m_ref, 6), "current": round(m_cur, 6)})
    if isinstance(ref, NumericColumn) and isinstance(cur, NumericColumn):
        i_ref, i_cur = _ratio(ref.inf, ref), _ratio(cur.inf, cur)
        if cur.inf and i_cur > i_ref:
            found.append({"column": name, "signal": "inf_values", "reference": i_ref, "current": i_cur})
        if ref.count and cur.count:
            pts = np.array([ref.min, ref.max], dtype=np.float32)
            below = float(cur.kll.get_cdf(pts[:1], inclusive=False)[0])  # share strictly below ref.min
            above = 1.0 - float(cur.kll.get_cdf(pts[1:], inclusive=True)[0])  # share strictly above ref.max
            outside = max(below, 0.0) + max(above, 0.0)
            if cur.min < ref.min or cur.max > ref.max:
                outside = max(outside, 1.0 / cur.count)
            else:
                outside = 0.0
            if outside > cfg.out_of_range_tolerance:
                found.append({"column": name, "signal": "out_of_range", "current": round(outside, 6),
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


def schema_issues(ref: Mapping[str, Column], cur: Mapping[str, Column], role: str) -> list[Issue]:
    """Columns missing from or added to production, and columns whose kind changed."""
    found: list[Issue] = []
    for name, col in ref.items():
        other = cur.get(name)
        if other is None or _present_rows(other) == 0:
            found.append({"column": name, "role": role, "signal": "missing_column"})
        elif other.kind != col.kind:
            found.append({"column": name, "role": role, "signal": "type_change",
                          "reference": col.kind, "current": other.kind})
    for name in cur:
        if name not in ref:
            found.append({"column": name, "role": role, "signal": "new_column"})
    return found
