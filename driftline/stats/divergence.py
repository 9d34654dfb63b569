"""Distances between two discrete distributions given as aligned probability vectors.

Shared by the numeric methods (on reference-quantile bins) and the categorical ones (on categories),
and by the exact computations on raw data that tests compare against, so "computed the same way"
means the same code. Each ``*_rows`` function takes ``(rows, bins)`` arrays and returns one distance
per row (a report scores all its numeric columns at once); the scalar functions are its one-row case.
Bins with zero mass on both sides add exactly nothing to any of them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PSI_EPSILON", "hellinger", "hellinger_rows", "jensen_shannon", "jensen_shannon_rows", "psi",
           "psi_rows", "tvd"]

PSI_EPSILON = 1e-4
"""Empty bins are floored at this probability before PSI's logarithm (as Evidently does)."""


def psi_rows(ref: np.ndarray, cur: np.ndarray, eps: float = PSI_EPSILON) -> np.ndarray:
    """Population stability index per row: sum (q - p) ln(q / p), empty bins floored at ``eps``."""
    p = np.maximum(ref, eps)
    q = np.maximum(cur, eps)
    return np.sum((q - p) * np.log(q / p), axis=-1)


def jensen_shannon_rows(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance per row (square root of the divergence, base 2), in [0, 1]."""
    m = 0.5 * (ref + cur)

    def kl(a: np.ndarray) -> np.ndarray:
        ratio = np.divide(a, m, out=np.ones_like(a), where=a > 0)  # a == 0 adds 0 * log2(1)
        return np.sum(a * np.log2(ratio), axis=-1)

    jsd = 0.5 * kl(ref) + 0.5 * kl(cur)
    return np.minimum(np.sqrt(np.maximum(jsd, 0.0)), 1.0)  # rounding must not leave [0, 1]


def hellinger_rows(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Hellinger distance per row, sqrt(1 - sum sqrt(p q)), in [0, 1]."""
    bc = np.sum(np.sqrt(ref * cur), axis=-1)
    return np.sqrt(np.maximum(1.0 - bc, 0.0))


def psi(ref: np.ndarray, cur: np.ndarray, eps: float = PSI_EPSILON) -> float:
    """Population stability index: sum (q - p) ln(q / p), empty bins floored at ``eps``."""
    return float(psi_rows(np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64), eps))


def jensen_shannon(ref: np.ndarray, cur: np.ndarray) -> float:
    """Jensen-Shannon distance (square root of the divergence, base 2), in [0, 1]."""
    return float(jensen_shannon_rows(np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64)))


def hellinger(ref: np.ndarray, cur: np.ndarray) -> float:
    """Hellinger distance sqrt(1 - sum sqrt(p q)), in [0, 1]."""
    return float(hellinger_rows(np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64)))


def tvd(ref: np.ndarray, cur: np.ndarray) -> float:
    """Total variation distance 0.5 * sum |p - q|, in [0, 1]."""
    return float(min(0.5 * np.sum(np.abs(ref - cur)), 1.0))  # rounding must not leave [0, 1]
