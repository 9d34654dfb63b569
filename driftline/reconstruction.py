"""Multivariate drift by data reconstruction: a PCA of the reference, and how well it rebuilds new rows.

Univariate tests compare one column at a time, so a change in how features move *together* (a
correlation that flips sign while every marginal stays put) passes all of them. A model of the
reference's joint structure catches it: standardise the numeric features, keep the principal
components that explain ``variance`` of the reference's variance (65% by default, as NannyML's
data-reconstruction drift), project each row onto them and back, and measure the Euclidean distance
between the standardised row and its reconstruction. Rows that follow the reference's correlations
rebuild well; rows that break them do not, so the mean reconstruction error of a window rises.

The pieces, all pure (numpy and msgpack only):

- :class:`ReconstructionFitter` accumulates the standardised Gram matrix in one streaming pass
  (exact, O(d²) memory), and :meth:`ReconstructionFitter.model` turns it into a frozen
  :class:`ReconstructionModel` (versioned bytes, a stable digest); the reference's own errors are
  cross-fitted (each half of the rows scored by the model of the other half);
- :meth:`ReconstructionModel.errors` is the vectorised per-row error of a batch of columns;
- :class:`ErrorSketch` is a mergeable sketch of per-row errors (a :class:`NumericColumn`: exact
  count, sum and sum of squares, a KLL sketch) tagged with the model's digest; it travels in a
  profile's optional ``reconstruction`` key (``docs/wire-format.md``); a reference's also holds the
  model itself;
- :func:`evaluate_reconstruction` is the decision (``docs/statistics.md``): a window drifts when
  its mean error leaves ``mu_ref +- z * sigma_ref * sqrt(1/n + 1/N)``, the CLT band of a mean of
  ``n`` rows drawn from the reference (``N`` rows, per-row error mean ``mu_ref`` and standard
  deviation ``sigma_ref``), ``z = 3`` by default (0.27% false alarms per window under H0).

Missing values: a missing, NaN or infinite value (and a feature a batch lacks altogether) is
imputed with the reference mean, i.e. 0 after standardisation, so it adds no error of its own; a
missing-rate jump is the univariate report's job. Categorical features are excluded (a PCA of
one-hot codes mostly measures their frequencies, which the univariate chi-square test already
tests); so is a numeric feature that is constant in the reference (its scale would be 0).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from .columns import NumericColumn, column_from_dict
from .errors import ProfileError

__all__ = [
    "DEFAULT_VARIANCE",
    "DEFAULT_Z",
    "MAX_MODEL_FEATURES",
    "MODEL_FORMAT",
    "ErrorSketch",
    "ReconstructionFitter",
    "ReconstructionModel",
    "ReconstructionResult",
    "evaluate_reconstruction",
    "fit_reconstruction",
    "numeric_scaling",
]

MODEL_FORMAT = 1
"""Version of :meth:`ReconstructionModel.to_bytes`; a reader refuses a newer one."""
DEFAULT_VARIANCE = 0.65
"""Share of the reference's standardised variance the kept components explain (NannyML's default)."""
DEFAULT_Z = 3.0
"""Half-width of the decision band in standard errors: 0.27% false alarms per window under H0."""
DEFAULT_MIN_ROWS = 100
"""Rows a window needs before its mean error is judged (the CLT band needs a few dozen at least)."""
MAX_MODEL_FEATURES = 512
"""Numeric features one model may cover: 512² float64 components are 2 MiB, the wire's bound."""


def _f64(raw: bytes, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.frombuffer(raw, dtype="<f8")
    if arr.size != math.prod(shape):
        raise ProfileError(f"reconstruction model array has {arr.size} values, expected {math.prod(shape)}")
    out = arr.reshape(shape).astype(np.float64)
    if not np.isfinite(out).all():
        raise ProfileError("reconstruction model holds a value that is not finite")
    return out


@dataclass(frozen=True, eq=False)
class ReconstructionModel:
    """A frozen PCA of the reference's standardised numeric features, as data; pure and versioned.

    ``components`` is ``(k, d)`` with orthonormal rows, ``mean`` and ``scale`` standardise the ``d``
    ``features`` (in this order). :attr:`digest` names the model: equal models have equal digests.
    """

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    variance: float = DEFAULT_VARIANCE
    explained: float = 0.0
    rows: int = 0

    def __post_init__(self) -> None:
        d = len(self.features)
        if d == 0 or d > MAX_MODEL_FEATURES or len(set(self.features)) != d:
            raise ProfileError(f"a reconstruction model needs 1 to {MAX_MODEL_FEATURES} distinct features, got {d}")
        if self.mean.shape != (d,) or self.scale.shape != (d,) or self.components.ndim != 2 \
                or self.components.shape[1] != d or not 1 <= self.components.shape[0] <= d:
            raise ProfileError("reconstruction model arrays do not match its features")
        if not (self.scale > 0).all():
            raise ProfileError("reconstruction model scales must be > 0")

    @property
    def k(self) -> int:
        """Components kept."""
        return int(self.components.shape[0])

    def to_bytes(self) -> bytes:
        """MessagePack bytes (float64 little-endian arrays): deterministic, so the digest is stable."""
        return msgpack.packb({
            "format": MODEL_FORMAT, "features": list(self.features), "k": self.k,
            "mean": self.mean.astype("<f8").tobytes(), "scale": self.scale.astype("<f8").tobytes(),
            "components": np.ascontiguousarray(self.components, dtype="<f8").tobytes(),
            "variance": float(self.variance), "explained": float(self.explained), "rows": int(self.rows),
        }, use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> ReconstructionModel:
        """Read :meth:`to_bytes`; any defect is a :class:`ProfileError` naming it."""
        try:
            d = msgpack.unpackb(data, raw=False, strict_map_key=True, max_str_len=1024,
                                max_array_len=MAX_MODEL_FEATURES, max_map_len=32, max_ext_len=0)
            if not isinstance(d, dict):
                raise ProfileError("reconstruction model is not a map")
            if d.get("format") != MODEL_FORMAT:
                raise ProfileError(f"reconstruction model format {d.get('format')!r} is not {MODEL_FORMAT}")
            names = tuple(str(x) for x in d["features"])
            k = int(d["k"])
            n = len(names)
            return cls(names, _f64(d["mean"], (n,)), _f64(d["scale"], (n,)), _f64(d["components"], (k, n)),
                       float(d.get("variance", DEFAULT_VARIANCE)), float(d.get("explained", 0.0)),
                       int(d.get("rows", 0)))
        except ProfileError:
            raise
        except Exception as exc:  # noqa: BLE001 - every defect of untrusted bytes is one typed error
            raise ProfileError(f"reconstruction model is malformed: {type(exc).__name__}: {exc}") from exc

    @functools.cached_property
    def digest(self) -> str:
        """``v<format>-<blake2b of the bytes>``: the model's version, served next to it."""
        return f"v{MODEL_FORMAT}-" + hashlib.blake2b(self.to_bytes(), digest_size=12).hexdigest()

    def standardised(self, cols: Mapping[str, Any], n: int) -> np.ndarray:
        """``(n, d)`` standardised matrix of ``cols``; missing, non-finite and absent values are 0 (the mean)."""
        z = np.zeros((n, len(self.features)), dtype=np.float64)
        for j, name in enumerate(self.features):
            arr = cols.get(name)
            if arr is None:
                continue
            arr = np.asarray(arr)
            if arr.dtype.kind not in "fiub":
                arr = _to_float(arr)
            v = arr.astype(np.float64, copy=False).reshape(-1)
            if v.size != n:
                raise ProfileError(f"column {name!r} has {v.size} values, expected {n}")
            with np.errstate(all="ignore"):
                col = (v - self.mean[j]) / self.scale[j]
            col[~np.isfinite(col)] = 0.0
            z[:, j] = col
        return z

    def errors(self, cols: Mapping[str, Any], n: int | None = None) -> np.ndarray:
        """Per-row reconstruction error: ``|| z - z V^T V ||`` for each standardised row ``z``."""
        if n is None:
            n = next((len(np.asarray(cols[f]).reshape(-1)) for f in self.features if f in cols), 0)
        z = self.standardised(cols, n)
        rebuilt = (z @ self.components.T) @ self.components
        return np.sqrt(np.einsum("ij,ij->i", z - rebuilt, z - rebuilt))


def _to_float(arr: np.ndarray) -> np.ndarray:
    out = np.full(arr.shape, np.nan)
    for i, v in enumerate(arr.reshape(-1)):
        if isinstance(v, int | float | np.number) and not isinstance(v, bool):
            out.reshape(-1)[i] = float(v)
    return out


class ReconstructionFitter:
    """Accumulates ``Z^T Z`` of standardised rows in batches, then keeps the leading eigenvectors.

    ``mean`` and ``scale`` come from a first pass (a reference profile's numeric columns hold
    them exactly); a second pass feeds batches to :meth:`update`; a third feeds the same rows to
    :meth:`reference_errors`. The reference's own errors are *cross-fitted*: rows are split by the
    parity of their index, and each half's errors come from the model fitted on the other half.
    Errors of the rows a model was fitted on are optimistic (the fit picks the directions where
    that sample happens to vary most), so in-sample errors would put the band too low and flag
    new data from the same distribution too often.
    """

    def __init__(self, features: Sequence[str], mean: Sequence[float], scale: Sequence[float]) -> None:
        mu = np.asarray(mean, dtype=np.float64)
        sd = np.asarray(scale, dtype=np.float64)
        self._shape = ReconstructionModel(tuple(features), mu, sd, np.eye(len(mu))[:1])
        self.grams = (np.zeros((len(mu), len(mu))), np.zeros((len(mu), len(mu))))  # even rows, odd rows
        self.rows = 0
        self._halves: tuple[ReconstructionModel, ReconstructionModel] | None = None
        self._error_rows = 0

    def update(self, cols: Mapping[str, Any], n: int) -> ReconstructionFitter:
        """Fold ``n`` rows; returns ``self``."""
        if n:
            z = self._shape.standardised(cols, n)
            first = self.rows % 2  # parity of this batch's first row, by global row index
            for part in (0, 1):
                zp = z[(part - first) % 2 :: 2]
                self.grams[part][...] += zp.T @ zp
            self.rows += n
        return self

    def _fit(self, gram: np.ndarray, rows: int, variance: float, k: int | None = None) -> ReconstructionModel:
        vals, vecs = np.linalg.eigh(gram / max(rows, 1))
        order = np.argsort(vals)[::-1]
        vals, vecs = np.clip(vals[order], 0.0, None), vecs[:, order]
        total = float(vals.sum())
        share = np.cumsum(vals) / total if total > 0 else np.ones_like(vals)
        if k is None:
            k = int(np.searchsorted(share, variance - 1e-12) + 1)
        k = min(max(k, 1), len(vals))
        comps = vecs[:, :k].T.copy()
        comps *= np.where(comps[np.arange(k), np.abs(comps).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]  # stable sign
        s = self._shape
        return ReconstructionModel(s.features, s.mean, s.scale, comps, float(variance), float(share[k - 1]), rows)

    def model(self, variance: float = DEFAULT_VARIANCE) -> ReconstructionModel:
        """The model fitted on every row: the fewest components whose eigenvalues reach ``variance`` of the total."""
        if not 0.0 < variance <= 1.0:
            raise ProfileError(f"variance must be in (0, 1], got {variance}")
        if self.rows < 4:
            raise ProfileError("a reconstruction model needs at least 4 rows")
        full = self._fit(self.grams[0] + self.grams[1], self.rows, variance)
        even, odd = (self.rows + 1) // 2, self.rows // 2
        self._halves = (self._fit(self.grams[0], even, variance, full.k), self._fit(self.grams[1], odd, variance, full.k))
        self._error_rows = 0
        return full

    def reference_errors(self, cols: Mapping[str, Any], n: int) -> np.ndarray:
        """Cross-fitted errors of the next ``n`` reference rows (the rows of :meth:`update`, in the same order)."""
        if self._halves is None:
            raise ProfileError("call model() before reference_errors()")
        out = np.empty(n)
        first = self._error_rows % 2
        idx = np.arange(n)
        for part in (0, 1):
            sel = idx[(part - first) % 2 :: 2]
            if sel.size:
                other = self._halves[1 - part]
                out[sel] = other.errors({k: np.asarray(v).reshape(-1)[sel] for k, v in cols.items()
                                         if k in other.features}, int(sel.size))
        self._error_rows += n
        return out


def numeric_scaling(cols: Mapping[str, Any]) -> tuple[list[str], list[float], list[float]]:
    """Features a model can cover (numeric, >= 2 finite values, not constant) with their mean and std."""
    names, mean, scale = [], [], []
    for name in sorted(cols):
        c = cols[name]
        if isinstance(c, NumericColumn) and c.count >= 2 and math.isfinite(c.std) and c.std > 0:
            names.append(name)
            mean.append(c.mean)
            scale.append(c.std)
    return names[:MAX_MODEL_FEATURES], mean[:MAX_MODEL_FEATURES], scale[:MAX_MODEL_FEATURES]


def fit_reconstruction(cols: Mapping[str, Any], *, variance: float = DEFAULT_VARIANCE
                       ) -> tuple[ReconstructionModel, ErrorSketch]:
    """Fit on in-memory numeric columns (tests, benchmarks): the model and the reference's cross-fitted
    error sketch (carrying the model). The CLI streams the same steps with :class:`ReconstructionFitter`."""
    stats: dict[str, NumericColumn] = {}
    n = 0
    for name, arr in cols.items():
        v = np.asarray(arr, dtype=np.float64).reshape(-1)
        n = v.size
        c = stats[name] = NumericColumn()
        c.update_array(v)
    names, mean, scale = numeric_scaling(stats)
    if not names:
        raise ProfileError("no numeric feature with spread to fit a reconstruction model on")
    fitter = ReconstructionFitter(names, mean, scale).update(cols, n)
    model = fitter.model(variance)
    return model, ErrorSketch(model.digest, model=model.to_bytes()).update(fitter.reference_errors(cols, n))


@dataclass
class ErrorSketch:
    """Per-row reconstruction errors of one window (or of the reference), for the model ``digest``.

    Merging keeps exact totals when both sides used the same model. Sides of different models
    (a reference replaced mid-window) cannot be added: the side with more rows wins (ties: the
    larger digest), so the merge stays commutative. ``model`` holds the model's bytes on a
    reference; windows leave it out.
    """

    digest: str
    column: NumericColumn = field(default_factory=NumericColumn)
    model: bytes | None = None

    def update(self, errors: np.ndarray) -> ErrorSketch:
        self.column.update_array(np.asarray(errors, dtype=np.float64))
        return self

    def merge_into(self, other: ErrorSketch) -> ErrorSketch:
        """Fold ``other`` in place (see the class docstring for different models); returns ``self``."""
        if other.digest == self.digest:
            self.column.merge(other.column)
            self.model = self.model if self.model is not None else other.model
        elif (other.column.count, other.digest) > (self.column.count, self.digest):
            self.digest, self.column, self.model = other.digest, other.column.copy(), other.model
        return self

    def decoded_model(self) -> ReconstructionModel | None:
        """The model these errors came from, when this sketch carries it (a reference)."""
        return ReconstructionModel.from_bytes(self.model) if self.model is not None else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"digest": self.digest, "error": self.column.to_dict()}
        if self.model is not None:
            d["model"] = self.model
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], kll_items: str | None = None) -> ErrorSketch:
        col = column_from_dict(d["error"]) if kll_items is None else column_from_dict(d["error"], kll_items)
        if not isinstance(col, NumericColumn):
            raise ProfileError("a reconstruction error sketch must be a numeric column")
        model = d.get("model")
        return cls(str(d["digest"]), col, bytes(model) if model is not None else None)


@dataclass(frozen=True)
class ReconstructionResult:
    """The multivariate verdict of one window: its mean error against the reference's band."""

    status: str  # "ok" | "drift" | "insufficient_data" | "model_mismatch"
    error_mean: float
    reference_mean: float
    reference_std: float
    lower: float
    upper: float
    rows: int
    reference_rows: int
    digest: str
    z: float

    @property
    def drifted(self) -> bool:
        return self.status == "drift"

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None
        return {"status": self.status, "drift_detected": self.drifted, "error_mean": clean(self.error_mean),
                "reference_mean": clean(self.reference_mean), "reference_std": clean(self.reference_std),
                "lower": clean(self.lower), "upper": clean(self.upper), "rows": self.rows,
                "reference_rows": self.reference_rows, "model_digest": self.digest, "z": self.z,
                "method": "reconstruction_error_mean"}


def evaluate_reconstruction(reference: ErrorSketch, current: ErrorSketch | None, *, z: float = DEFAULT_Z,
                            min_rows: int = DEFAULT_MIN_ROWS) -> ReconstructionResult:
    """Is the current window's mean reconstruction error inside the reference's band?

    Parameters
    ----------
    reference : the reference's per-row errors (under the model it carries).
    current : the window's per-row errors; ``None`` when no rows were sketched.
    z : half-width of the band in standard errors.
    min_rows : fewer current rows than this is ``insufficient_data``.

    Under H0 (window rows drawn like the reference's) the window mean of ``n`` errors is about
    normal with mean ``mu`` and variance ``sigma² / n``; ``mu`` itself is estimated from ``N`` rows,
    so the band is ``mu +- z * sigma * sqrt(1/n + 1/N)``. Errors from another model than the
    reference's are ``model_mismatch``, never compared.

    Examples
    --------
    >>> ref = ErrorSketch("m").update(np.full(1000, 1.0))
    >>> evaluate_reconstruction(ref, ErrorSketch("m").update(np.full(200, 1.0))).status
    'ok'
    """
    rc = reference.column
    mu, sd, big_n = rc.mean, rc.std, rc.count
    cur = current.column if current is not None else None
    n = cur.count if cur is not None else 0
    mean = cur.mean if cur is not None and n else math.nan
    half = z * (sd if math.isfinite(sd) else math.nan) * math.sqrt(1.0 / max(n, 1) + 1.0 / max(big_n, 1))
    lo, hi = mu - half, mu + half
    if current is not None and current.digest != reference.digest:
        status = "model_mismatch"
    elif n < min_rows or big_n < 2 or not math.isfinite(half):
        status = "insufficient_data"
    else:
        status = "drift" if not lo <= mean <= hi else "ok"
    return ReconstructionResult(status, mean, mu, sd, lo, hi, n, big_n, reference.digest, z)
