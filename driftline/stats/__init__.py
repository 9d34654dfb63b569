"""Statistics from profiles alone: drift, prediction shift, data quality and skew (pure, numpy only).

See ``docs/statistics.md`` for the formulas, the decision rule and the measured error bounds.
"""

from __future__ import annotations

from .canary import DEFAULT_GUARDRAILS, CanaryConfig, CanaryResult, Guardrail, evaluate_canary
from .categorical import (
    CategoricalScores,
    CategoryCounts,
    categorical_scores,
    category_counts,
    exact_categorical_scores,
)
from .decision import (
    CATEGORICAL_METHODS,
    DEFAULT_THRESHOLDS,
    DRIFT_METHODS,
    NUMERIC_METHODS,
    SCORE_METHODS,
    DriftConfig,
    benjamini_hochberg,
)
from .numeric import (
    NumericScores,
    SketchCDF,
    exact_numeric_scores,
    numeric_scores,
    numeric_scores_many,
    sketch_cdf,
)
from .quality import SIGNALS
from .report import ColumnResult, DriftReport, compare_profiles

__all__ = [
    "CATEGORICAL_METHODS",
    "DEFAULT_GUARDRAILS",
    "DEFAULT_THRESHOLDS",
    "DRIFT_METHODS",
    "NUMERIC_METHODS",
    "SCORE_METHODS",
    "SIGNALS",
    "CategoryCounts",
    "SketchCDF",
    "category_counts",
    "sketch_cdf",
    "CanaryConfig",
    "CanaryResult",
    "Guardrail",
    "evaluate_canary",
    "CategoricalScores",
    "ColumnResult",
    "DriftConfig",
    "DriftReport",
    "NumericScores",
    "benjamini_hochberg",
    "categorical_scores",
    "compare_profiles",
    "exact_categorical_scores",
    "exact_numeric_scores",
    "numeric_scores",
    "numeric_scores_many",
]
