"""Distances between two discrete distributions given as aligned probability vectors.

Shared by the numeric methods (on reference-quantile bins) and the categorical ones (on categories),
and by the exact computations on raw data that tests compare against, so "computed the same way"
means the same code.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PSI_EPSILON", "hellinger", "jensen_shannon", "psi", "tvd"]

PSI_EPSILON = 1e-4
"""Empty bins are floored at this probability before PSI's logarithm (as Evidently does)."""


def psi(ref: np.ndarray, cur: np.ndarray, eps: float = PSI_EPSILON) -> float:
    """Population stability index: sum (q - p) ln(q / p), empty bins floored at ``eps``."""
    p = np.maximum(ref, eps)
    q = np.maximum(cur, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon(ref: np.ndarray, cur: np.ndarray) -> float:
    """Jensen-Shannon distance (square root of the divergence, base 2), in [0, 1]."""
    m = 0.5 * (ref + cur)

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    jsd = 0.5 * kl(ref) + 0.5 * kl(cur)
    return float(min(np.sqrt(max(jsd, 0.0)), 1.0))  # rounding must not leave [0, 1]


def hellinger(ref: np.ndarray, cur: np.ndarray) -> float:
    """Hellinger distance sqrt(1 - sum sqrt(p q)), in [0, 1]."""
    bc = float(np.sum(np.sqrt(ref * cur)))
    return float(np.sqrt(max(1.0 - bc, 0.0)))


def tvd(ref: np.ndarray, cur: np.ndarray) -> float:
    """Total variation distance 0.5 * sum |p - q|, in [0, 1]."""
    return float(min(0.5 * np.sum(np.abs(ref - cur)), 1.0))  # rounding must not leave [0, 1]
