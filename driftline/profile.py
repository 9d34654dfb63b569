"""Window profiles: everything Driftline knows about one stream in one time window, in a few KB.

A :class:`WindowProfile` summarises the rows one (model, model_version, variant, source) produced in
``[start, end)``: exact row counts, one mergeable summary per feature and per model output, and
optionally runtime stats and a bounded reservoir of raw rows. Profiles merge associatively and
commutatively with exact totals, so the sidecar, the spool and the service can combine them in any
order.

Merging profiles with different feature sets is defined: the result has the union of columns, and a
column missing from one side records that side's rows as ``absent`` (so per-column totals still add
up to ``rows_profiled``). Key fields that differ (say, two devices) become ``"*"`` in the result.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from datasketches import kll_doubles_sketch, kll_floats_sketch

from .batch import as_columns, categorical_data, infer_kind, numeric_data
from .columns import (
    DEFAULT_FI_LG_MAX,
    DEFAULT_HLL_LG_K,
    DEFAULT_KLL_K,
    KLL_DOUBLES,
    KLL_FLOATS,
    CategoricalColumn,
    Column,
    NumericColumn,
    column_from_dict,
    numeric_fields,
    widen_kll_floats,
)
from .errors import ProfileError, SchemaConflictError
from .pairing import SHADOW_KEYS, PairedSummary
from .reconstruction import ErrorSketch

__all__ = [
    "ANY",
    "ProfileConfig",
    "Reservoir",
    "RuntimeStats",
    "StreamKey",
    "VERDICT_KEYS",
    "WindowProfile",
    "merge_all",
]

VERDICT_KEYS = ("dataset_drift", "drift_share", "status", "drifted", "evaluated_at", "reference")
"""Keys of a profile's optional ``verdict`` map (bounds in :mod:`driftline.wirecheck`); others are dropped."""

ANY = "*"
"""Value of a key field after merging profiles that disagree on it."""


@dataclass(frozen=True, slots=True)
class StreamKey:
    """Who produced a profile: the model, its version, the traffic variant, the source and cohort labels."""

    model: str
    model_version: str
    variant: str = "default"
    source: str = ""
    cohort: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(
        cls,
        model: str,
        model_version: str,
        variant: str = "default",
        source: str = "",
        cohort: Mapping[str, str] | None = None,
    ) -> StreamKey:
        return cls(model, model_version, variant, source, tuple(sorted((cohort or {}).items())))

    @property
    def cohort_dict(self) -> dict[str, str]:
        return dict(self.cohort)

    def merged_with(self, other: StreamKey) -> StreamKey:
        def pick(a: str, b: str) -> str:
            return a if a == b else ANY

        cohort = tuple(sorted(set(self.cohort) & set(other.cohort)))
        return StreamKey(
            pick(self.model, other.model),
            pick(self.model_version, other.model_version),
            pick(self.variant, other.variant),
            pick(self.source, other.source),
            cohort,
        )


@dataclass(frozen=True, slots=True)
class ProfileConfig:
    """Sketch sizes and forced column kinds. Larger ``kll_k`` means smaller rank error and bigger profiles."""

    kll_k: int = DEFAULT_KLL_K
    fi_lg_max_k: int = DEFAULT_FI_LG_MAX
    hll_lg_k: int = DEFAULT_HLL_LG_K
    reservoir_size: int = 0
    categorical: frozenset[str] = frozenset()
    numeric: frozenset[str] = frozenset()
    seed: int = 0

    def __post_init__(self) -> None:
        if not 8 <= self.kll_k <= 65535:
            raise ProfileError(f"kll_k must be in [8, 65535], got {self.kll_k}")
        if not 3 <= self.fi_lg_max_k <= 24:
            raise ProfileError(f"fi_lg_max_k must be in [3, 24], got {self.fi_lg_max_k}")
        if not 4 <= self.hll_lg_k <= 21:
            raise ProfileError(f"hll_lg_k must be in [4, 21], got {self.hll_lg_k}")
        if self.reservoir_size < 0:
            raise ProfileError("reservoir_size must be >= 0")


class RuntimeStats:
    """Serving health in one window: latency quantiles (ms), errors, process CPU seconds and peak RSS."""

    __slots__ = ("latency_ms", "errors", "cpu_seconds", "rss_bytes")

    def __init__(self, k: int = DEFAULT_KLL_K) -> None:
        self.latency_ms = kll_floats_sketch(k)
        self.errors = 0
        self.cpu_seconds = 0.0
        self.rss_bytes = 0

    def update(
        self,
        latency_ms: float | Sequence[float] | np.ndarray | None = None,
        errors: int = 0,
        cpu_seconds: float = 0.0,
        rss_bytes: int = 0,
    ) -> None:
        if latency_ms is not None:
            lat = np.atleast_1d(np.asarray(latency_ms, dtype=np.float64))
            lat = lat[np.isfinite(lat)]
            if lat.size:
                self.latency_ms.update(lat.astype(np.float32))
        self.errors += int(errors)
        self.cpu_seconds += float(cpu_seconds)
        self.rss_bytes = max(self.rss_bytes, int(rss_bytes))

    def merge(self, other: RuntimeStats) -> None:
        self.latency_ms.merge(other.latency_ms)
        self.errors += other.errors
        self.cpu_seconds += other.cpu_seconds
        self.rss_bytes = max(self.rss_bytes, other.rss_bytes)

    def latency_quantile(self, q: float) -> float:
        return math.nan if self.latency_ms.is_empty() else float(self.latency_ms.get_quantile(q))

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": bytes(self.latency_ms.serialize()),
            "errors": self.errors,
            "cpu_seconds": self.cpu_seconds,
            "rss_bytes": self.rss_bytes,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RuntimeStats:
        rt = cls.__new__(cls)
        rt.latency_ms = kll_floats_sketch.deserialize(bytes(d["latency_ms"]))
        rt.errors = int(d["errors"])
        rt.cpu_seconds = float(d["cpu_seconds"])
        rt.rss_bytes = int(d["rss_bytes"])
        return rt


class Reservoir:
    """A bounded uniform sample of raw rows (Algorithm R), for drill-down reports. Off by default.

    A batch draws every row's would-be slot at once and builds only the rows that end up kept, so
    a million-row file costs a few numpy calls and at most ``capacity`` row dicts.
    """

    __slots__ = ("capacity", "seen", "rows", "_rng")

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.capacity = capacity
        self.seen = 0
        self.rows: list[dict[str, Any]] = []
        self._rng = np.random.default_rng(seed)

    def add_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        """Offer rows one by one (small batches)."""
        items = list(rows)
        self.add_batch(len(items), items.__getitem__)

    def add_batch(self, n: int, row: Callable[[int], dict[str, Any]]) -> None:
        """Offer ``n`` rows; ``row(i)`` builds row ``i`` and is called only for rows that are kept."""
        if n <= 0 or self.capacity <= 0:
            self.seen += max(n, 0)
            return
        fill = min(max(self.capacity - len(self.rows), 0), n)
        for i in range(fill):
            self.rows.append(row(i))
        if fill < n:
            t = self.seen + np.arange(fill + 1, n + 1, dtype=np.float64)  # 1-based position in the stream
            slot = np.floor(self._rng.random(n - fill) * t).astype(np.int64)
            keep = np.flatnonzero(slot < self.capacity)
            # a later row in the same slot replaces an earlier one: keep the last per slot
            last: dict[int, int] = {}
            for k in keep.tolist():
                last[int(slot[k])] = fill + k
            for j, i in last.items():
                self.rows[j] = row(i)
        self.seen += n

    def merge(self, other: Reservoir) -> None:
        """Weighted merge: each side keeps a share of slots proportional to the rows it has seen."""
        total = self.seen + other.seen
        capacity = max(self.capacity, other.capacity)
        if total == 0:
            self.capacity = capacity
            return
        take_self = min(len(self.rows), round(capacity * self.seen / total))
        take_other = min(len(other.rows), capacity - take_self)
        take_self = min(len(self.rows), capacity - take_other)
        rng = random.Random(total)
        rows = rng.sample(self.rows, take_self) + rng.sample(other.rows, take_other)
        self.rows = rows
        self.capacity = capacity
        self.seen = total

    def to_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "seen": self.seen, "rows": self.rows}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reservoir:
        r = cls(int(d["capacity"]))
        r.seen = int(d["seen"])
        r.rows = [dict(x) for x in d["rows"]]
        return r


def _json_safe(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is None or isinstance(v, str | int | float | bool):
        return v
    return str(v)


@dataclass
class WindowProfile:
    """The mergeable summary of one stream over one time window ``[start, end)`` (epoch seconds)."""

    key: StreamKey
    start: float
    end: float
    config: ProfileConfig = field(default_factory=ProfileConfig)
    rows: int = 0
    rows_profiled: int = 0
    features: dict[str, Column] = field(default_factory=dict)
    outputs: dict[str, Column] = field(default_factory=dict)
    runtime: RuntimeStats | None = None
    reservoir: Reservoir | None = None
    verdict: dict[str, Any] | None = None  # the device's own drift verdict (docs/wire-format.md), optional
    performance: Any = None  # PerformanceSummary of delayed labels joined to this window (docs/wire-format.md)
    calibration: dict[str, Any] | None = None  # a reference's score calibration (driftline/estimate.py), optional
    reconstruction: ErrorSketch | None = None  # per-row reconstruction errors (and a reference's model), optional
    shadow: dict[str, Any] | None = None  # paired shadow-vs-live summary (driftline/pairing.py), optional

    # ---- building -------------------------------------------------------------------------
    def update(
        self,
        features: Any,
        outputs: Any = None,
        *,
        feature_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        latency_ms: float | Sequence[float] | np.ndarray | None = None,
        errors: int = 0,
        rows_observed: int | None = None,
    ) -> WindowProfile:
        """Fold a batch (or one row) of features and outputs; returns ``self``.

        ``rows_observed`` is the exact number of rows seen before sampling (defaults to the
        batch size), so row totals stay exact when only a sample is profiled.
        """
        if self._fold_matrix(features, feature_names, outputs):
            n, fcols = int(features.shape[0]), dict[str, np.ndarray]()
        else:
            n, fcols = as_columns(features, feature_names)
        n_out, ocols = as_columns(outputs, output_names)
        if ocols and fcols and n_out != n:
            raise ProfileError(f"features have {n} rows but outputs have {n_out}")
        n = n or n_out
        if fcols or not isinstance(features, np.ndarray):
            self._fold(self.features, fcols, n)
        self._fold(self.outputs, ocols, n)
        self.rows_profiled += n
        self.rows += n if rows_observed is None else int(rows_observed)
        if latency_ms is not None or errors:
            self.runtime_stats().update(latency_ms=latency_ms, errors=errors)
        if self.reservoir is None and self.config.reservoir_size > 0:
            self.reservoir = Reservoir(self.config.reservoir_size, self.config.seed)
        if self.reservoir is not None and n:
            self._sample_rows(n, fcols, ocols)
        return self

    def _fold_matrix(self, features: Any, names: Sequence[str] | None, outputs: Any) -> bool:
        """Fast path for a finite 2-D float matrix of numeric features: exact moments by row-major
        reductions, one float64 column-major copy, then one whole-column sketch update per column.
        Returns False (nothing done) when the general path must run."""
        if not (isinstance(features, np.ndarray) and features.ndim == 2 and features.dtype.kind == "f"
                and features.shape[0] >= 1024 and self.reservoir is None and self.config.reservoir_size == 0):
            return False
        n, m = features.shape
        cols = list(names) if names is not None else [f"f{i}" for i in range(m)]
        if len(cols) != m or len(set(cols)) != m or any(c in self.config.categorical for c in cols):
            return False
        if any(isinstance(self.features.get(c), CategoricalColumn) for c in cols):
            return False
        if set(self.features) - set(cols):
            return False  # other features would need their absent counts: the general path does that
        if outputs is not None and as_columns(outputs)[0] not in (0, n):
            return False
        x = np.asarray(features, dtype=np.float64)
        if not np.isfinite(x).all():
            return False
        vmin, vmax, vsum = x.min(axis=0), x.max(axis=0), x.sum(axis=0)
        vsumsq = np.einsum("ij,ij->j", x, x)
        xf = np.asfortranarray(x)
        for j, name in enumerate(cols):
            col = self.features.get(name)
            if col is None:
                col = NumericColumn(self.config.kll_k)
                col.absent = self.rows_profiled
                self.features[name] = col
            assert isinstance(col, NumericColumn)
            col.update_summarised(xf[:, j], n, float(vmin[j]), float(vmax[j]), float(vsum[j]), float(vsumsq[j]))
        return True

    def runtime_stats(self) -> RuntimeStats:
        """The runtime stats of this window, created on first use."""
        if self.runtime is None:
            self.runtime = RuntimeStats(self.config.kll_k)
        return self.runtime

    def _new_column(self, name: str, arr: np.ndarray) -> Column:
        return _empty_column(self._forced_kind(name) or infer_kind(arr), self.config)

    def declare(self, kinds: Mapping[str, str], outputs: Iterable[str] = ()) -> WindowProfile:
        """Create empty columns of known kinds (a data file's whole-file types) before any batch.

        Kinds forced by the config win; names already present are left alone. Returns ``self``.
        """
        outs = set(outputs)
        for name, kind in kinds.items():
            target = self.outputs if name in outs else self.features
            if name in target or kind not in ("numeric", "categorical"):
                continue
            kind = self._forced_kind(name) or kind
            col = _empty_column(kind, self.config)
            col.absent = self.rows_profiled
            target[name] = col
        return self

    def _forced_kind(self, name: str) -> str | None:
        if name in self.config.categorical:
            return "categorical"
        if name in self.config.numeric:
            return "numeric"
        return None

    def _fold(self, target: dict[str, Column], cols: dict[str, np.ndarray], n: int) -> None:
        for name, arr in cols.items():
            col = target.get(name)
            if col is None:
                col = self._new_column(name, arr)
                col.absent = self.rows_profiled  # rows before this column first appeared
                target[name] = col
            elif not has_typed_values(col) and self._forced_kind(name) is None and arr.size:
                # nothing but missing so far (leading nulls): the first real values decide the kind
                kind = infer_kind(arr)
                if kind != col.kind and _has_present(arr):
                    col = target[name] = retyped(col, kind, self.config)
            if isinstance(col, NumericColumn):
                data = numeric_data(arr)
            else:
                data = categorical_data(arr)
            col.update_array(data.values, missing=data.missing, invalid=data.invalid)
        for name, col in target.items():
            if name not in cols:
                col.absent += n

    def _sample_rows(self, n: int, fcols: dict[str, np.ndarray], ocols: dict[str, np.ndarray]) -> None:
        res = self.reservoir
        assert res is not None

        def row(i: int) -> dict[str, Any]:
            out = {k: _json_safe(v[i]) for k, v in fcols.items()}
            out.update({f"output:{k}": _json_safe(v[i]) for k, v in ocols.items()})
            return out

        res.add_batch(n, row)

    # ---- combining -------------------------------------------------------------------------
    def merge(self, other: WindowProfile) -> WindowProfile:
        """Return a new profile that summarises both; neither input changes."""
        out = self.copy()
        out.merge_into(other)
        return out

    def merge_into(self, other: WindowProfile) -> WindowProfile:
        """Fold ``other`` into this profile in place; returns ``self``."""
        self.key = self.key.merged_with(other.key)
        self.start = min(self.start, other.start)
        self.end = max(self.end, other.end)
        _merge_columns(self.features, other.features, self.rows_profiled, other.rows_profiled)
        _merge_columns(self.outputs, other.outputs, self.rows_profiled, other.rows_profiled)
        self.rows += other.rows
        self.rows_profiled += other.rows_profiled
        if other.runtime is not None:
            self.runtime_stats().merge(other.runtime)
        if other.reservoir is not None:
            if self.reservoir is None:
                self.reservoir = Reservoir(other.reservoir.capacity)
            self.reservoir.merge(other.reservoir)
        if other.verdict is not None and (self.verdict is None or float(other.verdict.get("evaluated_at", 0.0))
                                          >= float(self.verdict.get("evaluated_at", 0.0))):
            self.verdict = dict(other.verdict)  # a merged window carries its newest device verdict
        if other.performance is not None:  # labels joined later to this window's predictions
            self.performance = other.performance.copy() if self.performance is None else \
                self.performance.merge(other.performance)
        if self.calibration != other.calibration:  # it describes one labelled data set: kept only if both agree
            self.calibration = None
        if other.reconstruction is not None:
            if self.reconstruction is None:
                self.reconstruction = ErrorSketch(other.reconstruction.digest, model=other.reconstruction.model)
            self.reconstruction.merge_into(other.reconstruction)
        if other.shadow is not None:
            self.shadow = PairedSummary.merged((self.shadow, other.shadow)).to_dict()
        return self

    def copy(self) -> WindowProfile:
        return WindowProfile.from_dict(self.to_dict())

    def with_key(self, **changes: Any) -> WindowProfile:
        out = self.copy()
        out.key = replace(out.key, **changes)
        return out

    # ---- reading ---------------------------------------------------------------------------
    @property
    def columns(self) -> dict[str, Column]:
        """Features and outputs together (outputs prefixed ``output:`` only on a name clash)."""
        out: dict[str, Column] = dict(self.features)
        for k, v in self.outputs.items():
            out[f"output:{k}" if k in out else k] = v
        return out

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for people: per column kind, counts and a few quantiles."""

        def col_summary(name: str, col: Column) -> dict[str, Any]:
            if isinstance(col, NumericColumn):
                qs = col.quantiles([0.01, 0.25, 0.5, 0.75, 0.99])
                return {
                    "name": name,
                    "type": "numeric",
                    "count": col.count,
                    "missing": col.missing + col.nan,
                    "inf": col.inf,
                    "invalid": col.invalid,
                    "min": col.min if col.count else None,
                    "max": col.max if col.count else None,
                    "mean": col.mean if col.count else None,
                    "quantiles": {
                        f"p{int(r * 100)}": (None if math.isnan(v) else float(v))
                        for r, v in zip([0.01, 0.25, 0.5, 0.75, 0.99], qs, strict=True)
                    },
                }
            freqs = sorted(col.frequencies().items(), key=lambda kv: -kv[1])[:10]
            return {
                "name": name,
                "type": "categorical",
                "count": col.count,
                "missing": col.missing,
                "invalid": col.invalid,
                "distinct": round(col.distinct),
                "top": [{"value": k, "count": v} for k, v in freqs],
            }

        return {
            "model": self.key.model,
            "model_version": self.key.model_version,
            "variant": self.key.variant,
            "source": self.key.source,
            "cohort": self.key.cohort_dict,
            "start": self.start,
            "end": self.end,
            "rows": self.rows,
            "rows_profiled": self.rows_profiled,
            "features": [col_summary(k, c) for k, c in self.features.items()],
            "outputs": [col_summary(k, c) for k, c in self.outputs.items()],
        }

    # ---- dict form (the wire codec encodes this) --------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        cfg = self.config
        d: dict[str, Any] = {
            "model": self.key.model,
            "model_version": self.key.model_version,
            "variant": self.key.variant,
            "source": self.key.source,
            "cohort": [list(kv) for kv in self.key.cohort],
            "start": float(self.start),
            "end": float(self.end),
            "rows": self.rows,
            "rows_profiled": self.rows_profiled,
            "config": {
                "kll_k": cfg.kll_k,
                "fi_lg_max_k": cfg.fi_lg_max_k,
                "hll_lg_k": cfg.hll_lg_k,
                "reservoir_size": cfg.reservoir_size,
                "categorical": sorted(cfg.categorical),
                "numeric": sorted(cfg.numeric),
            },
            "features": {k: c.to_dict() for k, c in self.features.items()},
            "outputs": {k: c.to_dict() for k, c in self.outputs.items()},
        }
        if self.runtime is not None:
            d["runtime"] = self.runtime.to_dict()
        if self.reservoir is not None:
            d["reservoir"] = self.reservoir.to_dict()
        if self.verdict is not None:
            d["verdict"] = dict(self.verdict)
        if self.performance is not None:
            d["performance"] = self.performance.to_dict()
        if self.calibration is not None:
            d["calibration"] = dict(self.calibration)
        if self.reconstruction is not None:
            d["reconstruction"] = self.reconstruction.to_dict()
        if self.shadow is not None:
            d["shadow"] = dict(self.shadow)
        return d

    def __getattr__(self, name: str) -> Any:
        """Build the columns of a profile read with ``from_dict(..., lazy=True)`` on first access.

        Only called for an attribute the instance lacks, so a built profile pays nothing."""
        if name in ("features", "outputs"):
            pending = self.__dict__.pop("_pending_columns", None)
            if pending is not None:
                _names, source, kll_items = pending
                if callable(source):  # the decoder re-reads this profile from its own bytes
                    d = source()
                    features, outputs = dict(d["features"]), dict(d["outputs"])
                else:
                    features, outputs = source
                self.features = {str(k): column_from_dict(v, kll_items, lazy=True) for k, v in features.items()}
                self.outputs = {str(k): column_from_dict(v, kll_items, lazy=True) for k, v in outputs.items()}
                return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def column_names(self, group: str) -> tuple[str, ...]:
        """The names of ``features`` or ``outputs``, without building the columns of a lazily read profile
        (the service's catalog needs only the names)."""
        pending = self.__dict__.get("_pending_columns")
        if pending is not None:
            return pending[0][0 if group == "features" else 1]
        return tuple(self.features if group == "features" else self.outputs)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], kll_items: str = KLL_DOUBLES, *, lazy: bool = False,
                  reread: Callable[[], Mapping[str, Any]] | None = None,
                  numeric_names: tuple[tuple[str, ...], tuple[str, ...]] | None = None) -> WindowProfile:
        """Rebuild from the dict form; ``kll_items="floats"`` for profiles of wire format 1.

        ``lazy``: numeric columns keep their (checked) sketch bytes and build the sketch on first use
        (:class:`~driftline.columns.NumericColumn`), for a reader that may never look at them. A
        profile whose columns are all numeric goes further: every sketch is deserialized here (so bad
        bytes raise exactly as they would eagerly), but the column objects are built only when
        ``features`` or ``outputs`` is first read. Only for a body :func:`~driftline.wirecheck.check_body`
        passed, whose field types are then known to convert.

        ``reread`` (with ``lazy``): returns ``d`` again, for the wire decoder, which can read it back
        from its own bytes. An all-numeric profile then keeps only its column names, and the decoded
        column maps are freed at once: a batch of envelopes waiting for the store holds their bytes,
        not a thousand objects each.

        ``numeric_names`` (with ``lazy`` and ``reread``): the feature and output names of a profile
        whose columns the caller has read and checked itself, all numeric, their sketches
        deserialized (:mod:`driftline.wirefast`); ``d`` then needs no ``features`` or ``outputs``.
        """
        c = d.get("config") or {}
        cfg = ProfileConfig(
            kll_k=int(c.get("kll_k", DEFAULT_KLL_K)),
            fi_lg_max_k=int(c.get("fi_lg_max_k", DEFAULT_FI_LG_MAX)),
            hll_lg_k=int(c.get("hll_lg_k", DEFAULT_HLL_LG_K)),
            reservoir_size=int(c.get("reservoir_size", 0)),
            categorical=frozenset(str(x) for x in c.get("categorical", ())),
            numeric=frozenset(str(x) for x in c.get("numeric", ())),
        )
        key = StreamKey(
            str(d["model"]),
            str(d["model_version"]),
            str(d["variant"]),
            str(d["source"]),
            tuple((str(a), str(b)) for a, b in d.get("cohort", ())),
        )
        prof = cls(
            key=key,
            start=float(d["start"]),
            end=float(d["end"]),
            config=cfg,
            rows=int(d["rows"]),
            rows_profiled=int(d["rows_profiled"]),
        )
        if numeric_names is not None:  # checked by the caller (wirefast), which can re-read the columns
            if not lazy or reread is None:
                raise ValueError("numeric_names needs lazy=True and reread")
            del prof.features, prof.outputs  # built by __getattr__ on first access
            prof._pending_columns = (numeric_names, reread, kll_items)
        else:
            features, outputs = dict(d["features"]), dict(d["outputs"])
            if lazy and _check_numeric_columns(features, outputs, kll_items):
                del prof.features, prof.outputs
                names = (tuple(map(str, features)), tuple(map(str, outputs)))
                prof._pending_columns = (names, reread if reread is not None else (features, outputs), kll_items)
            else:
                prof.features = {str(k): column_from_dict(v, kll_items, lazy=lazy) for k, v in features.items()}
                prof.outputs = {str(k): column_from_dict(v, kll_items, lazy=lazy) for k, v in outputs.items()}
        if d.get("runtime") is not None:
            prof.runtime = RuntimeStats.from_dict(d["runtime"])
        if d.get("reservoir") is not None:
            prof.reservoir = Reservoir.from_dict(d["reservoir"])
        if isinstance(d.get("verdict"), Mapping):
            prof.verdict = {k: d["verdict"][k] for k in VERDICT_KEYS if k in d["verdict"]}
        if d.get("performance") is not None:
            from .performance import PerformanceSummary  # the performance module imports nothing of ours

            prof.performance = PerformanceSummary.from_dict(d["performance"])
        if isinstance(d.get("calibration"), Mapping):
            prof.calibration = dict(d["calibration"])
        if isinstance(d.get("reconstruction"), Mapping):
            prof.reconstruction = ErrorSketch.from_dict(d["reconstruction"], kll_items)
        if isinstance(d.get("shadow"), Mapping):
            prof.shadow = {k: d["shadow"][k] for k in SHADOW_KEYS if k in d["shadow"]}
        return prof


def check_numeric_sketches(sketches: Iterable[bytes], kll_items: str = KLL_DOUBLES) -> None:
    """Deserialize each numeric column's KLL sketch bytes (widened first for wire format 1), raising
    as building the column would; the objects are dropped (a lazy column builds its own on use)."""
    deserialize = kll_doubles_sketch.deserialize
    if kll_items == KLL_FLOATS:
        for raw in sketches:
            deserialize(widen_kll_floats(raw))
    else:
        for raw in sketches:
            deserialize(raw)


def _check_numeric_columns(features: dict[Any, Any], outputs: dict[Any, Any], kll_items: str) -> bool:
    """True when every column is numeric and its sketch deserializes (raising as building it would, in
    the same order); False at the first column that is not numeric, so the caller builds them all."""
    deserialize = kll_doubles_sketch.deserialize
    widen = kll_items == KLL_FLOATS
    for group in (features, outputs):
        for v in group.values():
            if type(v) is not dict or v.get("kind") != "numeric":
                return False
            raw = numeric_fields(v)[0]  # a missing field raises the KeyError building would
            if type(raw) is not bytes:
                raw = bytes(raw)
            deserialize(widen_kll_floats(raw) if widen else raw)
    return True


def _empty_column(kind: str, cfg: ProfileConfig) -> Column:
    if kind == "numeric":
        return NumericColumn(cfg.kll_k)
    return CategoricalColumn(cfg.fi_lg_max_k, cfg.hll_lg_k)


def _has_present(arr: np.ndarray) -> bool:
    if arr.dtype.kind == "f":
        return bool(np.isfinite(arr).any())
    if arr.dtype.kind == "O":
        return any(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in arr.tolist())
    return arr.size > 0


def has_typed_values(col: Column) -> bool:
    """Whether a column has seen any value that fixes its kind (not just nulls, NaNs or absences)."""
    if isinstance(col, NumericColumn):
        return bool(col.count or col.inf or col.invalid)
    return bool(col.count or col.invalid)


def retyped(col: Column, kind: str, cfg: ProfileConfig) -> Column:
    """An all-missing column as an empty column of ``kind``, with its missing and absent rows kept.

    A column with nothing but nulls (a window where a categorical was never filled in) has no kind
    of its own; it takes the kind of the data it meets, instead of a schema conflict.
    """
    if has_typed_values(col):
        raise ProfileError("only a column without values can change kind")
    out = _empty_column(kind, cfg)
    nan = col.nan if isinstance(col, NumericColumn) else 0
    if isinstance(out, NumericColumn):
        out.missing, out.nan = col.missing, nan
    else:
        out.missing = col.missing + nan  # a NaN is a missing label
    out.absent = col.absent
    return out


def _sizes(col: Column) -> ProfileConfig:
    return ProfileConfig(kll_k=col.k) if isinstance(col, NumericColumn) else ProfileConfig(hll_lg_k=col.lg_k)


def _merge_columns(mine: dict[str, Column], theirs: dict[str, Column], my_rows: int, their_rows: int) -> None:
    for name, col in theirs.items():
        if name in mine:
            ours = mine[name]
            if type(ours) is not type(col) and not has_typed_values(ours):
                ours = mine[name] = retyped(ours, col.kind, _sizes(col))
            elif type(ours) is not type(col) and not has_typed_values(col):
                col = retyped(col, ours.kind, _sizes(ours))
            if type(ours) is not type(col):
                raise SchemaConflictError(name, ours.kind, col.kind)
            ours.merge(col)  # type: ignore[arg-type]
        else:
            new = col.copy()
            new.absent += my_rows
            mine[name] = new
    for name, col in mine.items():
        if name not in theirs:
            col.absent += their_rows


def merge_all(profiles: Iterable[WindowProfile]) -> WindowProfile:
    """Merge any number of profiles (at least one) into a new profile."""
    it = iter(profiles)
    try:
        first = next(it)
    except StopIteration:
        raise ProfileError("merge_all needs at least one profile") from None
    out = first.copy()
    for p in it:
        out.merge_into(p)
    return out
