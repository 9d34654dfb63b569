"""Streams: which (model, version, variant, device, cohort) a row belongs to, checked and bounded.

Every label is validated once per distinct combination and cached, so the hot path pays a dict
lookup. The allow-list, the cohort label bound and the stream bound live here, together with the
exact per-stream row counters the metrics export (bounded by ``max_streams``, so metric labels are).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from driftline.profile import StreamKey

from .errors import ObserveError
from .inputs import label

__all__ = ["Obs", "StreamDefaults", "StreamTable"]

Obs = tuple[str, str, str]
"""(model, model_version, variant): the key of the exact row counters."""


@dataclass(frozen=True, slots=True)
class StreamDefaults:
    """The labels a row gets when it does not carry its own (a monitor's model, version, ... )."""

    model: str | None = None
    model_version: str | None = None
    variant: str = "default"
    device: str = ""
    cohort: Mapping[str, str] = field(default_factory=dict)


class StreamTable:
    """Validated stream keys, their defaults and bounds, and rows observed per (model, version, variant).

    Not thread-safe on its own: the monitor calls it under its lock.
    """

    def __init__(self, defaults: StreamDefaults = StreamDefaults(), *, allowed_models: Sequence[str] = (),
                 max_streams: int = 1000, max_cohort_labels: int = 8) -> None:
        self.defaults = defaults
        self.allowed_models = frozenset(allowed_models)
        self.max_streams = max_streams
        self.max_cohort_labels = max_cohort_labels
        self.observed: dict[Obs, int] = {}
        self._keys: dict[tuple[Any, ...], tuple[StreamKey, Obs]] = {}

    def key(self, model: Any, model_version: Any, variant: Any, device: Any, cohort: Any) -> tuple[StreamKey, Obs]:
        """The stream of a row; raises ObserveError with a reason when a label is unusable."""
        ck = None if cohort is None else (tuple(cohort.items()) if isinstance(cohort, Mapping) else id(cohort))
        cache_key = (model, model_version, variant, device, ck)
        try:
            hit = self._keys.get(cache_key)
        except TypeError:  # unhashable labels
            raise ObserveError("stream labels must be strings", "wrong_type") from None
        if hit is not None:
            return hit
        d = self.defaults
        m = label(model, "model", d.model)
        if self.allowed_models and m not in self.allowed_models:
            raise ObserveError(f"model {m!r} is not in the sidecar's models list", "unknown_model")
        v = label(model_version, "model_version", d.model_version or "unknown", allow_numbers=True)
        var = label(variant, "variant", d.variant or "default")
        dev = label(device, "device", d.device or "") if device is not None else d.device
        labels = dict(d.cohort)
        if cohort is not None:
            if not isinstance(cohort, Mapping):
                raise ObserveError(f"cohort must be a mapping, got {type(cohort).__name__}", "wrong_type")
            for k, val in cohort.items():
                labels[label(k, "cohort label")] = label(val, f"cohort[{k}]", allow_numbers=True)
        if len(labels) > self.max_cohort_labels:
            raise ObserveError(f"{len(labels)} cohort labels, at most {self.max_cohort_labels}", "oversized")
        obs = (m, v, var)
        if obs not in self.observed:
            if len(self.observed) >= self.max_streams:
                raise ObserveError(f"more than {self.max_streams} streams; new stream {obs} refused", "oversized")
            self.observed[obs] = 0
        key = StreamKey.of(m, v, var, dev, labels)
        if len(self._keys) > 16 * self.max_streams:
            self._keys.clear()
        self._keys[cache_key] = (key, obs)
        return key, obs

    def count(self, obs: Obs, rows: int) -> None:
        """Add ``rows`` (before sampling) to the exact counter of a stream :meth:`key` admitted."""
        self.observed[obs] = self.observed.get(obs, 0) + rows
