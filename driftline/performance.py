"""A model's real performance per window and cohort, from labels that arrive after the predictions.

Pure: no clock, no I/O; callers pass times. Two parts:

* :class:`PerformanceSummary`: the mergeable summary of the labelled predictions of one window.
  A binary classifier's summary holds the confusion counts at the decision threshold (exact), one
  KLL sketch of the scores of each class (for ROC AUC), and equal-width calibration bins over
  ``[0, 1]`` (count, score sum, positive count: exact expected calibration error). A regressor's holds
  the count and the sums of absolute and squared errors (exact MAE and RMSE). Summaries merge
  (associative, commutative, exact totals) and round-trip through :meth:`to_dict` / :meth:`from_dict`
  (the wire's optional ``performance`` window key, ``docs/wire-format.md``).
* :class:`LabelJoiner` (in :mod:`driftline.labeljoin`): pending predictions keyed by id, joined with
  labels within a bounded horizon in bounded memory.

ROC AUC from the two score sketches
-----------------------------------
With ``F0`` the scores' CDF among negatives and ``F1`` among positives,
``AUC = P(S1 > S0) + P(S1 = S0) / 2 = ∫ m0 dF1`` where ``m0(x) = (F0(x-) + F0(x)) / 2`` is monotone in
``[0, 1]``. The estimate replaces ``m0`` by the negative sketch's ranks and ``F1`` by the positive
sketch's weighted items. A KLL sketch's ranks are within ``ε`` (its normalised rank error, 99%
confidence) of the exact ones for every ``x``, so ``|m0_hat - m0| <= ε0``; and for any monotone ``g``
in ``[0, 1]``, integrating by parts gives ``|∫ g dF1_hat - ∫ g dF1| <= ε1``. Hence
``|AUC_hat - AUC| <= ε0 + ε1`` (:attr:`PerformanceResult.roc_auc_error_bound`); a sketch that has not
compacted (``n <= k``) is exact, ``ε = 0``. ``tests/test_performance.py`` checks the bound against
``sklearn.metrics.roc_auc_score`` over repeated seeded draws.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasketches import kll_doubles_sketch

from .errors import LabelError, PerformanceError

__all__ = [
    "BINARY",
    "DEFAULT_BINS",
    "DEFAULT_SCORE_K",
    "MAX_BINS",
    "PerformanceResult",
    "PerformanceSummary",
    "REGRESSION",
    "TASKS",
    "merge_summaries",
]

BINARY = "binary"
REGRESSION = "regression"
TASKS = (BINARY, REGRESSION)
DEFAULT_BINS = 10
MAX_BINS = 100
DEFAULT_SCORE_K = 200
"""KLL ``k`` of the class-conditional score sketches: rank error about 1.3% each (AUC bound ~2.7%)."""
MAX_COUNT = 2**62


def _sketch_error(s: kll_doubles_sketch) -> float:
    return float(s.normalized_rank_error(False)) if s.is_estimation_mode() else 0.0


@dataclass(frozen=True, slots=True)
class PerformanceResult:
    """Performance metrics of one summary; ``None`` where the labels do not define a metric."""

    task: str
    labelled: int
    threshold: float | None = None
    accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    roc_auc: float | None = None
    roc_auc_error_bound: float | None = None
    ece: float | None = None
    positives: int | None = None
    mae: float | None = None
    rmse: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the service's HTTP answer)."""
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]

    def metric(self, name: str) -> float | None:
        """One metric by name (the alert threshold's lookup)."""
        v = getattr(self, name, None)
        return None if v is None else float(v)


class PerformanceSummary:
    """The mergeable summary of labelled predictions in one window (see the module docstring).

    Parameters
    ----------
    task
        ``"binary"`` (scores in ``[0, 1]``, labels 0/1) or ``"regression"`` (numeric labels).
    threshold
        A binary prediction is positive when its score is ``>= threshold``.
    bins
        Equal-width calibration bins over ``[0, 1]`` for the expected calibration error.
    k
        KLL ``k`` of the score sketches (rank error and size grow as ``1/k`` and ``k``).
    """

    __slots__ = ("task", "threshold", "bins", "k", "tp", "fp", "tn", "fn", "pos", "neg", "cal_n", "cal_score",
                 "cal_pos", "n", "abs_err", "sq_err")

    def __init__(self, task: str = BINARY, threshold: float = 0.5, bins: int = DEFAULT_BINS,
                 k: int = DEFAULT_SCORE_K) -> None:
        if task not in TASKS:
            raise PerformanceError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        if not (isinstance(threshold, int | float) and math.isfinite(threshold)):
            raise PerformanceError(f"threshold must be a finite number, got {threshold!r}")
        if not 1 <= int(bins) <= MAX_BINS:
            raise PerformanceError(f"bins must be in [1, {MAX_BINS}], got {bins}")
        if not 8 <= int(k) <= 65535:
            raise PerformanceError(f"k must be in [8, 65535], got {k}")
        self.task = task
        self.threshold = float(threshold)
        self.bins = int(bins)
        self.k = int(k)
        self.tp = self.fp = self.tn = self.fn = 0
        self.pos = kll_doubles_sketch(self.k)
        self.neg = kll_doubles_sketch(self.k)
        self.cal_n = np.zeros(self.bins, dtype=np.int64)
        self.cal_score = np.zeros(self.bins, dtype=np.float64)
        self.cal_pos = np.zeros(self.bins, dtype=np.int64)
        self.n = 0
        self.abs_err = 0.0
        self.sq_err = 0.0

    # ---- building ------------------------------------------------------------------------------
    def update(self, predictions: Any, labels: Any) -> PerformanceSummary:
        """Fold labelled predictions (scores, or regression outputs) with their labels; returns ``self``.

        Raises :class:`~driftline.errors.LabelError` (nothing folded) when a label or score is not
        usable: a binary label other than 0/1/True/False, a score outside ``[0, 1]``, a non-finite value.
        """
        p = _floats(predictions, "predictions")
        y = _floats(labels, "labels")
        if p.shape != y.shape:
            raise LabelError(f"{p.size} predictions but {y.size} labels")
        if not p.size:
            return self
        if self.task == REGRESSION:
            d = p - y
            self.n += int(p.size)
            self.abs_err += float(np.abs(d).sum())
            self.sq_err += float(np.square(d).sum())
            return self
        if not np.all((y == 0.0) | (y == 1.0)):
            raise LabelError("binary labels must be 0 or 1")
        if not np.all((p >= 0.0) & (p <= 1.0)):
            raise LabelError("binary scores must be in [0, 1]")
        positive = y == 1.0
        predicted = p >= self.threshold
        tp = int(np.count_nonzero(positive & predicted))
        npos = int(np.count_nonzero(positive))
        npred = int(np.count_nonzero(predicted))
        self.tp += tp
        self.fn += npos - tp
        self.fp += npred - tp
        self.tn += int(p.size) - npos - npred + tp
        self.pos.update(p[positive])
        self.neg.update(p[~positive])
        b = np.minimum((p * self.bins).astype(np.int64), self.bins - 1)
        self.cal_n += np.bincount(b, minlength=self.bins)
        self.cal_score += np.bincount(b, weights=p, minlength=self.bins)
        self.cal_pos += np.bincount(b[positive], minlength=self.bins)
        return self

    # ---- combining -----------------------------------------------------------------------------
    def _check_compatible(self, other: PerformanceSummary) -> None:
        if (self.task, self.threshold, self.bins) != (other.task, other.threshold, other.bins):
            raise PerformanceError(
                f"cannot merge a {other.task} summary (threshold {other.threshold}, {other.bins} bins) into a "
                f"{self.task} one (threshold {self.threshold}, {self.bins} bins)")

    def merge_into(self, other: PerformanceSummary) -> PerformanceSummary:
        """Fold ``other`` into this summary in place (same task, threshold and bins); returns ``self``."""
        self._check_compatible(other)
        self.tp += other.tp
        self.fp += other.fp
        self.tn += other.tn
        self.fn += other.fn
        self.pos.merge(other.pos)
        self.neg.merge(other.neg)
        self.cal_n += other.cal_n
        self.cal_score += other.cal_score
        self.cal_pos += other.cal_pos
        self.n += other.n
        self.abs_err += other.abs_err
        self.sq_err += other.sq_err
        return self

    def merge(self, other: PerformanceSummary) -> PerformanceSummary:
        """A new summary of both; neither input changes."""
        return self.copy().merge_into(other)

    def copy(self) -> PerformanceSummary:
        return PerformanceSummary.from_dict(self.to_dict())

    # ---- reading -------------------------------------------------------------------------------
    @property
    def labelled(self) -> int:
        """Labelled predictions folded in (exact)."""
        return self.n if self.task == REGRESSION else self.tp + self.fp + self.tn + self.fn

    def result(self) -> PerformanceResult:
        """The metrics, as a frozen value."""
        if self.task == REGRESSION:
            if not self.n:
                return PerformanceResult(REGRESSION, 0)
            return PerformanceResult(REGRESSION, self.n, mae=self.abs_err / self.n,
                                     rmse=math.sqrt(max(self.sq_err, 0.0) / self.n))
        n = self.labelled
        if not n:
            return PerformanceResult(BINARY, 0, threshold=self.threshold)
        tp, fp, fn = self.tp, self.fp, self.fn
        precision = tp / (tp + fp) if tp + fp else None
        recall = tp / (tp + fn) if tp + fn else None
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
        ece = float(np.abs(self.cal_pos - self.cal_score).sum()) / n
        auc, bound = self._auc()
        return PerformanceResult(BINARY, n, threshold=self.threshold, accuracy=(tp + self.tn) / n,
                                 precision=precision, recall=recall, f1=f1, roc_auc=auc,
                                 roc_auc_error_bound=bound, ece=ece, positives=tp + fn)

    def _auc(self) -> tuple[float | None, float | None]:
        if self.pos.is_empty() or self.neg.is_empty():
            return None, None  # AUC is undefined with one class only
        items = np.fromiter((x for x, _ in self.pos), dtype=np.float64, count=self.pos.num_retained)
        weights = np.fromiter((w for _, w in self.pos), dtype=np.float64, count=self.pos.num_retained)
        xs, inv = np.unique(items, return_inverse=True)
        w = np.bincount(inv, weights=weights)
        below = np.asarray(self.neg.get_cdf(xs.tolist(), False)[:-1])  # F0(x-)
        upto = np.asarray(self.neg.get_cdf(xs.tolist(), True)[:-1])  # F0(x)
        auc = float(np.dot(w, (below + upto) / 2.0) / w.sum())
        return min(1.0, max(0.0, auc)), _sketch_error(self.pos) + _sketch_error(self.neg)

    # ---- dict form (the wire's ``performance`` key) --------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"task": self.task, "threshold": self.threshold}
        if self.task == REGRESSION:
            d.update(n=self.n, abs_err=self.abs_err, sq_err=self.sq_err)
            return d
        d.update(k=self.k, tp=self.tp, fp=self.fp, tn=self.tn, fn=self.fn, pos=self.pos.serialize(),
                 neg=self.neg.serialize(), cal_n=self.cal_n.tolist(), cal_score=self.cal_score.tolist(),
                 cal_pos=self.cal_pos.tolist())
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PerformanceSummary:
        """Rebuild and check a summary; :class:`PerformanceError` names what is inconsistent."""
        try:
            return cls._from_dict(d)
        except PerformanceError:
            raise
        except Exception as exc:  # a bad type, a corrupt sketch: one typed error
            raise PerformanceError(f"performance summary is malformed: {type(exc).__name__}: {exc}") from exc

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> PerformanceSummary:
        task = d["task"]
        if task == REGRESSION:
            s = cls(REGRESSION, float(d.get("threshold", 0.5)))
            s.n = _count(d["n"], "n")
            s.abs_err, s.sq_err = float(d["abs_err"]), float(d["sq_err"])
            if not (math.isfinite(s.abs_err) and math.isfinite(s.sq_err) and s.abs_err >= 0 and s.sq_err >= 0):
                raise PerformanceError("regression error sums must be finite and >= 0")
            return s
        cal_n = d["cal_n"]
        if not isinstance(cal_n, list | tuple):
            raise PerformanceError("cal_n must be a list")
        s = cls(task, float(d["threshold"]), len(cal_n), int(d["k"]))
        s.tp, s.fp, s.tn, s.fn = (_count(d[f], f) for f in ("tp", "fp", "tn", "fn"))
        s.pos = kll_doubles_sketch.deserialize(bytes(d["pos"]))
        s.neg = kll_doubles_sketch.deserialize(bytes(d["neg"]))
        s.cal_n = np.array([_count(v, "cal_n") for v in cal_n], dtype=np.int64)
        s.cal_pos = np.array([_count(v, "cal_pos") for v in d["cal_pos"]], dtype=np.int64)
        s.cal_score = np.array([float(v) for v in d["cal_score"]], dtype=np.float64)
        if s.cal_pos.shape != s.cal_n.shape or s.cal_score.shape != s.cal_n.shape:
            raise PerformanceError("calibration bins have different lengths")
        if s.pos.n != s.tp + s.fn or s.neg.n != s.fp + s.tn:
            raise PerformanceError("score sketches do not hold the confusion counts' positives and negatives")
        if int(s.cal_n.sum()) != s.labelled or int(s.cal_pos.sum()) != s.tp + s.fn or np.any(s.cal_pos > s.cal_n):
            raise PerformanceError("calibration bins do not add up to the confusion counts")
        if not np.all(np.isfinite(s.cal_score)) or np.any(s.cal_score < 0) or np.any(s.cal_score > s.cal_n):
            raise PerformanceError("calibration score sums must be in [0, count] per bin")
        return s

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PerformanceSummary) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PerformanceSummary({self.task!r}, labelled={self.labelled})"


def merge_summaries(summaries: Any) -> PerformanceSummary | None:
    """One summary of many (``None`` for none)."""
    out: PerformanceSummary | None = None
    for s in summaries:
        out = s.copy() if out is None else out.merge_into(s)
    return out


def _count(v: Any, what: str) -> int:
    if type(v) is not int or not 0 <= v <= MAX_COUNT:
        raise PerformanceError(f"{what} must be an integer in [0, 2**62], got {v!r}")
    return v


def _floats(v: Any, what: str) -> np.ndarray:
    try:
        arr = np.atleast_1d(np.asarray(v, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise LabelError(f"{what} must be numbers: {exc}") from None
    if arr.ndim != 1:
        raise LabelError(f"{what} must be one value or a flat sequence")
    if not np.all(np.isfinite(arr)):
        raise LabelError(f"{what} must be finite numbers")
    return arr
