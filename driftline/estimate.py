"""Label-free performance estimates: confidence-based performance estimation (CBPE) from score sketches.

Labels arrive late or never; the scores a binary classifier gave do not. If the model's scores
mean the same thing in production as on its labelled reference (``P(y = 1 | score)`` unchanged:
covariate shift, not concept shift), a calibration map ``c(s) ≈ P(y = 1 | s)`` fitted on the
reference turns a window's score distribution into *expected* confusion counts, and from them the
expected accuracy, precision, recall, F1 at the decision threshold and ROC AUC. A window already
carries the scores' KLL sketch, so nothing new is shipped from devices.

Pure: numpy only, no I/O, no clock.

* :class:`CalibrationBuilder` folds (score, label) batches into at most :data:`MAX_BINS` quantile
  bins (edges from the reference's own score sketch), so a training file of any size costs a few KB;
  :meth:`CalibrationBuilder.fit` pools the bins with the pool-adjacent-violators algorithm (isotonic
  regression) into a :class:`Calibration`: a small, versioned, monotone piecewise-linear map stored
  with the reference (the profile's optional ``calibration`` key, ``docs/wire-format.md``).
* :func:`estimate_performance` reads a window's score column and returns an :class:`EstimateResult`
  whose every metric has an error band combining the labels' sampling error (the window's ``n``),
  the calibration's own error (the reference's labelled rows per bin) and the sketch's rank error.
  ``docs/statistics.md`` ("Label-free performance estimates") gives the formulas and the measured
  coverage.

References: NannyML's CBPE (the expected confusion matrix from calibrated probabilities); Hanley
and McNeil (1982) for the sampling variance of an AUC; Barlow et al. (1972) for isotonic regression.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .columns import NumericColumn, canonical_label
from .errors import DriftlineError

__all__ = [
    "CALIBRATION_VERSION",
    "DEFAULT_BINS",
    "DEFAULT_Z",
    "MAX_BINS",
    "METRICS",
    "Calibration",
    "CalibrationBuilder",
    "EstimateError",
    "EstimateResult",
    "MetricEstimate",
    "estimate_from_scores",
    "estimate_performance",
    "realised_performance",
]

CALIBRATION_VERSION = 1
"""Version of the stored calibration map; a reader refuses versions it does not know."""
MAX_BINS = 256
"""Most bins (knots) a calibration keeps: the stored map stays a few KB."""
DEFAULT_BINS = 64
DEFAULT_Z = 3.0
"""Band half-width in standard errors (NannyML's bands are 3 sampling errors too)."""
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
MIN_ROWS = 30
"""Fewest scored rows a window needs for an estimate (the drift statistics' ``min_rows``)."""


class EstimateError(DriftlineError):
    """A calibration or an estimate that cannot be built or read; the message says why."""


# ---- calibration ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Calibration:
    """A monotone map from a model's score to ``P(y = 1 | score)``, fitted on labelled reference rows.

    ``x`` are the bins' mean scores (increasing), ``p`` the isotonic fit at each, ``block`` the
    pool each bin belongs to and ``block_rows`` / ``block_pos`` that pool's labelled rows and
    positives (the fit's own uncertainty). Between knots the map is linear, beyond them flat.
    """

    output: str
    threshold: float
    x: tuple[float, ...]
    p: tuple[float, ...]
    block: tuple[int, ...]
    block_rows: tuple[int, ...]
    block_pos: tuple[int, ...]
    rows: int
    label: str = ""
    positive: str = "1"
    version: int = CALIBRATION_VERSION

    def __post_init__(self) -> None:
        k = len(self.x)
        if not 1 <= k <= MAX_BINS or len(self.p) != k or len(self.block) != k:
            raise EstimateError(f"calibration needs 1 to {MAX_BINS} knots with one p and block each")
        if not all(math.isfinite(v) for v in self.x) or any(b <= a for a, b in zip(self.x, self.x[1:], strict=False)):
            raise EstimateError("calibration knots must be finite and strictly increasing")
        if any(not 0.0 <= v <= 1.0 for v in self.p) or any(b < a for a, b in zip(self.p, self.p[1:], strict=False)):
            raise EstimateError("calibration probabilities must be in [0, 1] and non-decreasing")
        nb = len(self.block_rows)
        if len(self.block_pos) != nb or any(not 0 <= b < nb for b in self.block):
            raise EstimateError("calibration blocks are inconsistent")
        if any(r <= 0 or not 0 <= q <= r for r, q in zip(self.block_rows, self.block_pos, strict=True)):
            raise EstimateError("calibration block counts are inconsistent")
        if not math.isfinite(self.threshold):
            raise EstimateError("calibration threshold must be finite")

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """``P(y = 1 | score)`` for each score."""
        return np.interp(np.asarray(scores, dtype=np.float64), np.asarray(self.x), np.asarray(self.p))

    def block_sd(self) -> np.ndarray:
        """Standard error of each pool's probability (binomial, with half a row of each class added)."""
        n = np.asarray(self.block_rows, dtype=np.float64)
        p = (np.asarray(self.block_pos, dtype=np.float64) + 0.5) / (n + 1.0)
        return np.sqrt(p * (1.0 - p) / n)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "output": self.output, "label": self.label, "positive": self.positive,
                "threshold": float(self.threshold), "rows": int(self.rows), "x": [float(v) for v in self.x],
                "p": [float(v) for v in self.p], "block": [int(v) for v in self.block],
                "block_rows": [int(v) for v in self.block_rows], "block_pos": [int(v) for v in self.block_pos]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        """Read a stored map; anything malformed is an :class:`EstimateError` naming what."""
        if not isinstance(d, Mapping):
            raise EstimateError("calibration is not a map")
        if d.get("version") != CALIBRATION_VERSION:
            raise EstimateError(f"calibration version {d.get('version')!r} is not supported "
                                f"(this build reads {CALIBRATION_VERSION})")
        try:
            return cls(output=str(d["output"]), threshold=float(d["threshold"]),
                       x=tuple(float(v) for v in d["x"]), p=tuple(float(v) for v in d["p"]),
                       block=tuple(int(v) for v in d["block"]), block_rows=tuple(int(v) for v in d["block_rows"]),
                       block_pos=tuple(int(v) for v in d["block_pos"]), rows=int(d["rows"]),
                       label=str(d.get("label", "")), positive=str(d.get("positive", "1")))
        except (KeyError, TypeError, ValueError) as exc:
            raise EstimateError(f"calibration is malformed: {exc}") from None


def _pav(means: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted pool-adjacent-violators: the non-decreasing fit and each input's pool index."""
    vals: list[float] = []
    wts: list[float] = []
    sizes: list[int] = []
    for m, w in zip(means.tolist(), weights.tolist(), strict=True):
        vals.append(m)
        wts.append(w)
        sizes.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            w2 = wts[-2] + wts[-1]
            v2 = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / w2
            s2 = sizes[-2] + sizes[-1]
            del vals[-1], wts[-1], sizes[-1]
            vals[-1], wts[-1], sizes[-1] = v2, w2, s2
    fit = np.repeat(np.asarray(vals), sizes)
    block = np.repeat(np.arange(len(vals)), sizes)
    return fit, block


class CalibrationBuilder:
    """Folds labelled (score, label) batches into quantile bins; :meth:`fit` makes the :class:`Calibration`.

    ``edges`` are interior bin edges (bin ``i`` holds scores in ``(edges[i-1], edges[i]]``), usually
    :meth:`from_column`: quantiles of the reference's own score sketch. Rows with a missing or
    non-finite score or a missing label are counted in :attr:`skipped`, not folded.
    """

    def __init__(self, output: str, edges: np.ndarray, *, threshold: float = 0.5, positive: Any = 1,
                 label: str = "") -> None:
        edges = np.unique(np.asarray(edges, dtype=np.float64))
        if edges.size + 1 > MAX_BINS or not np.isfinite(edges).all():
            raise EstimateError(f"at most {MAX_BINS - 1} finite bin edges")
        if not math.isfinite(threshold):
            raise EstimateError("threshold must be finite")
        self.output, self.label, self.threshold = output, label, float(threshold)
        self.positive = _label(positive)
        try:  # a numeric positive label compares with numeric label columns as a number (1 == 1.0 == True)
            self._positive_number: float | None = float(self.positive)
        except ValueError:
            self._positive_number = None
        self.edges = edges
        self.rows = np.zeros(edges.size + 1, dtype=np.int64)
        self.pos = np.zeros(edges.size + 1, dtype=np.int64)
        self.sums = np.zeros(edges.size + 1, dtype=np.float64)
        self.skipped = 0

    @classmethod
    def from_column(cls, output: str, col: NumericColumn, bins: int = DEFAULT_BINS, **kw: Any) -> CalibrationBuilder:
        """Edges at ``bins`` equal-count quantiles of the reference's score sketch (ties merge bins)."""
        if not 2 <= bins <= MAX_BINS:
            raise EstimateError(f"bins must be in [2, {MAX_BINS}], got {bins}")
        if col.count == 0:
            raise EstimateError(f"score column {output!r} has no values")
        ranks = np.arange(1, bins) / bins
        return cls(output, np.asarray(col.quantiles(list(ranks)), dtype=np.float64), **kw)

    def update(self, scores: Any, labels: Any) -> CalibrationBuilder:
        """Fold one batch; ``labels`` are compared with ``positive`` as canonical labels (``1``, ``1.0``
        and ``"1"`` are the same). Returns ``self``."""
        raw = np.asarray(scores)
        s = raw.astype(np.float64) if raw.dtype.kind in "iufb" else _as_float(raw.ravel()).reshape(raw.shape)
        y = np.asarray(labels)
        if s.shape != y.shape or s.ndim != 1:
            raise EstimateError(f"scores and labels differ in shape: {s.shape} vs {y.shape}")
        if y.dtype.kind in "iufb" and self._positive_number is not None:  # numeric labels: vectorised
            yf = y.astype(np.float64)
            ok = np.isfinite(s) & ~np.isnan(yf)
            hit = yf[ok] == self._positive_number
        else:
            yo = y.astype(object)
            present = np.array([not _missing(v) for v in yo.tolist()], dtype=bool)
            ok = np.isfinite(s) & present
            hit = np.array([_label(v) == self.positive for v in yo[ok].tolist()], dtype=bool)
        self.skipped += int(s.size - np.count_nonzero(ok))
        s = s[ok]
        idx = np.searchsorted(self.edges, s, side="left")
        size = self.rows.size
        self.rows += np.bincount(idx, minlength=size)
        self.pos += np.bincount(idx, weights=hit.astype(np.float64), minlength=size).astype(np.int64)
        self.sums += np.bincount(idx, weights=s, minlength=size)
        return self

    def fit(self) -> Calibration:
        """The isotonic fit over the non-empty bins; refused with fewer than :data:`MIN_ROWS` rows."""
        keep = self.rows > 0
        total = int(self.rows.sum())
        if total < MIN_ROWS:
            raise EstimateError(f"calibration needs at least {MIN_ROWS} labelled rows, got {total}")
        n, pos, sums = self.rows[keep], self.pos[keep], self.sums[keep]
        x = sums / n
        for i in range(1, x.size):  # disjoint bins have increasing means; guard the last bit of rounding
            if x[i] <= x[i - 1]:
                x[i] = np.nextafter(x[i - 1], np.inf)
        fit, block = _pav(pos / n, n.astype(np.float64))
        nb = int(block.max()) + 1
        b_rows = np.bincount(block, weights=n, minlength=nb).astype(np.int64)
        b_pos = np.bincount(block, weights=pos, minlength=nb).astype(np.int64)
        # equal means can only come from a single tied bin; strictly increasing by construction
        return Calibration(self.output, self.threshold, tuple(x.tolist()), tuple(np.clip(fit, 0, 1).tolist()),
                           tuple(block.tolist()), tuple(b_rows.tolist()), tuple(b_pos.tolist()), total,
                           label=self.label, positive=self.positive)


def _as_float(v: Any) -> np.ndarray:
    out = np.full(len(v), np.nan)
    for i, x in enumerate(v):
        try:
            out[i] = float(x) if x is not None else np.nan
        except (TypeError, ValueError):
            pass
    return out


def _label(v: Any) -> str:
    """A label as the canonical text categorical columns use; booleans are ``1`` and ``0``."""
    if isinstance(v, bool | np.bool_):
        return "1" if v else "0"
    return canonical_label(str(v))


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, np.floating) and np.isnan(v))


# ---- estimates ------------------------------------------------------------------------------------
def _finite(v: float | None) -> float | None:
    """JSON has no NaN: a metric or error the window does not define is null."""
    return None if v is None or not math.isfinite(v) else float(v)


@dataclass(frozen=True, slots=True)
class MetricEstimate:
    """One estimated metric with its band; ``value`` is ``None`` where the window does not define it."""

    name: str
    value: float | None
    lower: float | None
    upper: float | None
    sampling_sd: float
    calibration_sd: float
    rank_bound: float

    def covers(self, x: float) -> bool:
        return self.lower is not None and self.upper is not None and self.lower <= x <= self.upper

    def to_dict(self) -> dict[str, Any]:
        return {k: _finite(getattr(self, k))
                for k in ("value", "lower", "upper", "sampling_sd", "calibration_sd", "rank_bound")}


@dataclass(frozen=True, slots=True)
class EstimateResult:
    """The estimated performance of one window: ``status`` is ``ok`` or ``insufficient_data``."""

    output: str
    threshold: float
    rows: int
    status: str
    metrics: tuple[MetricEstimate, ...]
    z: float = DEFAULT_Z
    rank_error: float = 0.0

    def metric(self, name: str) -> MetricEstimate:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, "threshold": self.threshold, "rows": self.rows, "status": self.status,
                "z": self.z, "rank_error": self.rank_error, "metrics": {m.name: m.to_dict() for m in self.metrics}}


def _point(items: np.ndarray, w: np.ndarray, q: np.ndarray, t: float) -> dict[str, float]:
    """The expected confusion counts (as shares of ``n``) and the five metrics."""
    n = float(w.sum())
    pred = items >= t
    tp = float(np.dot(w[pred], q[pred])) / n
    fp = float(w[pred].sum()) / n - tp
    fn = float(np.dot(w[~pred], q[~pred])) / n
    tn = 1.0 - tp - fp - fn
    a = w * q
    b = w * (1.0 - q)
    big_a, big_b = float(a.sum()), float(b.sum())
    below = np.cumsum(b) - b
    auc = float(np.dot(a, below + 0.5 * b)) / (big_a * big_b) if big_a > 0 and big_b > 0 else math.nan
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "pos": big_a / n,
            "accuracy": tp + tn, "precision": tp / (tp + fp) if tp + fp > 0 else math.nan,
            "recall": tp / (tp + fn) if tp + fn > 0 else math.nan,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else math.nan, "roc_auc": auc}


def _sampling_sd(items: np.ndarray, w: np.ndarray, q: np.ndarray, t: float, pt: dict[str, float]) -> dict[str, float]:
    """Label noise given the scores: each label is Bernoulli(c(s)); delta method for the ratios,
    Hanley-McNeil for the AUC."""
    n = float(w.sum())
    pred = items >= t
    v = w * q * (1.0 - q)
    vx, vy = float(v[pred].sum()), float(v[~pred].sum())  # variances of TP and FN counts
    x, y, npp = pt["tp"] * n, pt["fn"] * n, (pt["tp"] + pt["fp"]) * n
    out = {"accuracy": math.sqrt(vx + vy) / n,
           "precision": math.sqrt(vx) / npp if npp > 0 else math.nan,
           "recall": math.sqrt(y * y * vx + x * x * vy) / (x + y) ** 2 if x + y > 0 else math.nan}
    d = npp + x + y
    out["f1"] = math.sqrt(4 * (npp + y) ** 2 * vx + 4 * x * x * vy) / d**2 if d > 0 else math.nan
    auc = pt["roc_auc"]
    n1, n0 = pt["pos"] * n, (1.0 - pt["pos"]) * n
    if math.isfinite(auc) and n1 >= 1 and n0 >= 1:
        q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
        var = (auc * (1 - auc) + (n1 - 1) * (q1 - auc * auc) + (n0 - 1) * (q2 - auc * auc)) / (n1 * n0)
        out["roc_auc"] = math.sqrt(max(var, 0.0))
    else:
        out["roc_auc"] = math.nan
    return out


def _calibration_sd(cal: Calibration, items: np.ndarray, w: np.ndarray, base: dict[str, float]) -> dict[str, float]:
    """The fit's own error, shared by every row of the window: a numeric gradient per pool times the
    pool's binomial standard error, summed in quadrature."""
    sd = cal.block_sd()
    x, p, block = np.asarray(cal.x), np.asarray(cal.p), np.asarray(cal.block)
    h = 1e-4
    acc = dict.fromkeys(METRICS, 0.0)
    for b in range(sd.size):
        pp = p + h * (block == b)
        q = np.clip(np.interp(items, x, pp), 0.0, 1.0)
        moved = _point(items, w, q, cal.threshold)
        for m in METRICS:
            if math.isfinite(moved[m]) and math.isfinite(base[m]):
                acc[m] += ((moved[m] - base[m]) / h * sd[b]) ** 2
    return {m: math.sqrt(v) for m, v in acc.items()}


def _rank_bounds(cal: Calibration, pt: dict[str, float], eps: float) -> dict[str, float]:
    """How far the metrics can move when the sketch's CDF is off by at most ``eps`` anywhere.

    ``|∫ g dF̂ − ∫ g dF| ≤ eps · TV(g)`` (integration by parts); the four expected counts are such
    integrals with ``TV ≤ 2``, the ratios take the worst corner of their intervals, and the AUC's
    first-order bound is ``eps (1 + AUC) / (π (1 − π))`` with ``π`` the expected positive share.
    """
    if eps <= 0:
        return dict.fromkeys(METRICS, 0.0)
    ct = float(cal(np.array([cal.threshold]))[0])
    pmin, pmax = cal.p[0], cal.p[-1]
    e = {"tp": eps * pmax, "fp": eps * (1 - 2 * ct + pmax), "fn": eps * (2 * ct - pmin), "tn": eps * (1 - pmin)}
    tp, fp, fn, tn = pt["tp"], pt["fp"], pt["fn"], pt["tn"]

    def span(f: Any, *corners: tuple[float, ...]) -> float:
        vals = [f(*c) for c in corners]
        vals = [v for v in vals if math.isfinite(v)]
        return max(abs(v - f(tp, fp, fn)) for v in vals) if vals else math.nan

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else math.nan

    lo_tp, hi_tp = max(tp - e["tp"], 0.0), tp + e["tp"]
    lo_fp, hi_fp = max(fp - e["fp"], 0.0), fp + e["fp"]
    lo_fn, hi_fn = max(fn - e["fn"], 0.0), fn + e["fn"]
    out = {"accuracy": e["tp"] + e["tn"],
           "precision": span(lambda a, b, c: ratio(a, a + b), (lo_tp, hi_fp, fn), (hi_tp, lo_fp, fn)),
           "recall": span(lambda a, b, c: ratio(a, a + c), (lo_tp, fp, hi_fn), (hi_tp, fp, lo_fn)),
           "f1": span(lambda a, b, c: ratio(2 * a, 2 * a + b + c), (lo_tp, hi_fp, hi_fn), (hi_tp, lo_fp, lo_fn))}
    pi, auc = pt["pos"], pt["roc_auc"]
    out["roc_auc"] = eps * (1 + auc) / (pi * (1 - pi)) if 0 < pi < 1 and math.isfinite(auc) else math.nan
    del tn
    return out


def estimate_from_scores(cal: Calibration, items: np.ndarray, weights: np.ndarray, *, rank_error: float = 0.0,
                         z: float = DEFAULT_Z) -> EstimateResult:
    """The estimate from a weighted score distribution (a sketch's items, or raw scores with weight 1)."""
    items = np.asarray(items, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    ok = np.isfinite(items) & (w > 0)
    items, w = items[ok], w[ok]
    order = np.argsort(items, kind="stable")
    items, w = items[order], w[order]
    n = int(round(float(w.sum())))
    if n < MIN_ROWS:
        empty = tuple(MetricEstimate(m, None, None, None, math.nan, math.nan, math.nan) for m in METRICS)
        return EstimateResult(cal.output, cal.threshold, n, "insufficient_data", empty, z, rank_error)
    q = cal(items)
    pt = _point(items, w, q, cal.threshold)
    samp = _sampling_sd(items, w, q, cal.threshold, pt)
    cs = _calibration_sd(cal, items, w, pt)
    rb = _rank_bounds(cal, pt, rank_error)
    out = []
    for m in METRICS:
        v = pt[m]
        if not math.isfinite(v):
            out.append(MetricEstimate(m, None, None, None, math.nan, math.nan, math.nan))
            continue
        half = z * math.hypot(samp[m], cs[m]) + (rb[m] if math.isfinite(rb[m]) else 1.0)
        out.append(MetricEstimate(m, v, max(0.0, v - half), min(1.0, v + half), samp[m], cs[m], rb[m]))
    return EstimateResult(cal.output, cal.threshold, n, "ok", tuple(out), z, rank_error)


def estimate_performance(cal: Calibration, col: NumericColumn, *, z: float = DEFAULT_Z) -> EstimateResult:
    """The estimated performance of a window from its score column's KLL sketch."""
    if not isinstance(col, NumericColumn):
        raise EstimateError(f"score column {cal.output!r} is not numeric")
    from .stats.stepcdf import sketch_cdf

    cdf = sketch_cdf(col) if col.count else None
    if cdf is None:
        return estimate_from_scores(cal, np.zeros(0), np.zeros(0), z=z)
    w = np.diff(np.concatenate(([0.0], cdf.cum)))
    return estimate_from_scores(cal, cdf.items, w, rank_error=cdf.rank_error, z=z)


def realised_performance(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """The exact metrics on raw labelled rows (labels 0/1): what the estimate is tested against."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    pred = s >= threshold
    tp = float(np.sum(pred & y))
    fp = float(np.sum(pred & ~y))
    fn = float(np.sum(~pred & y))
    tn = float(np.sum(~pred & ~y))
    n1, n0 = float(y.sum()), float((~y).sum())
    if n1 and n0:
        ranks = _midranks(s)
        auc = (float(ranks[y].sum()) - n1 * (n1 + 1) / 2) / (n1 * n0)
    else:
        auc = math.nan
    return {"accuracy": (tp + tn) / s.size, "precision": tp / (tp + fp) if tp + fp else math.nan,
            "recall": tp / (tp + fn) if tp + fn else math.nan,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan, "roc_auc": auc}


def _midranks(s: np.ndarray) -> np.ndarray:
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    ranks = np.empty(s.size)
    ranks[order] = np.arange(1, s.size + 1, dtype=np.float64)
    _, inv, counts = np.unique(sorted_s, return_inverse=True, return_counts=True)
    if counts.max(initial=1) > 1:  # average the ranks of ties
        sums = np.bincount(inv, weights=np.arange(1, s.size + 1, dtype=np.float64))
        ranks[order] = (sums / counts)[inv]
    return ranks
