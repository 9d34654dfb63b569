"""The paired summary of a shadow model against the live one, on the same requests (pure, mergeable).

The sidecar sees both answers to one mirrored request (the live model's, as the caller got it, and
the shadow's) and folds the comparison into a :class:`PairedSummary`: exact counts, and the moments
of the per-row score differences. It rides the shadow stream's window as the optional wire key
``shadow`` (docs/wire-format.md), so it merges wherever windows merge: the spool, the service's
time ranges, replicas. Nothing in it names a request: pairing is done where both answers are known.

Counts per mirrored request: ``requests`` (both sides answered, successfully or not), ``live_errors``
and ``shadow_errors`` (non-200 answers, timeouts, refused connections), ``live_only_errors`` and
``shadow_only_errors`` (the discordant pairs, McNemar's cells). Per row of a request both sides
answered with the same batch size: ``rows``; ``labelled`` and ``agree`` (the predicted labels are
equal); ``score_n``, ``score_mean``, ``score_m2`` (count, mean and sum of squared deviations of
``shadow score - live score``, merged with Chan et al.'s parallel formula, so merging is exact up
to floating point and associative). ``dropped``: mirrors the sidecar dropped (queue full).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["COUNT_KEYS", "MOMENT_KEYS", "SHADOW_KEYS", "PairedSummary"]

COUNT_KEYS = ("requests", "live_errors", "shadow_errors", "live_only_errors", "shadow_only_errors", "rows",
              "labelled", "agree", "score_n", "dropped")
MOMENT_KEYS = ("score_mean", "score_m2")
SHADOW_KEYS = COUNT_KEYS + MOMENT_KEYS
"""Keys of a profile's optional ``shadow`` map (bounds in :mod:`driftline.wirecheck`); others are dropped."""


@dataclass(slots=True)
class PairedSummary:
    """Counts and score-difference moments of shadow vs live over paired requests; merge adds them."""

    requests: int = 0
    live_errors: int = 0
    shadow_errors: int = 0
    live_only_errors: int = 0
    shadow_only_errors: int = 0
    rows: int = 0
    labelled: int = 0
    agree: int = 0
    score_n: int = 0
    score_mean: float = 0.0
    score_m2: float = 0.0
    dropped: int = 0

    def add_request(self, live_error: bool, shadow_error: bool) -> PairedSummary:
        """Count one mirrored request whose two answers (or failures) are known; returns ``self``."""
        self.requests += 1
        self.live_errors += bool(live_error)
        self.shadow_errors += bool(shadow_error)
        self.live_only_errors += bool(live_error and not shadow_error)
        self.shadow_only_errors += bool(shadow_error and not live_error)
        return self

    def add_rows(self, rows: int, live_labels: Iterable[Any] | None = None, shadow_labels: Iterable[Any] | None = None,
                 score_diffs: Iterable[float] | None = None) -> PairedSummary:
        """Fold the rows of one request both sides answered: labels pairwise, score differences; ``self``."""
        self.rows += int(rows)
        if live_labels is not None and shadow_labels is not None:
            for a, b in zip(live_labels, shadow_labels, strict=True):
                self.labelled += 1
                self.agree += a == b
        if score_diffs is not None:
            for d in score_diffs:
                d = float(d)
                if not math.isfinite(d):
                    continue
                self.score_n += 1
                delta = d - self.score_mean  # Welford's update
                self.score_mean += delta / self.score_n
                self.score_m2 += delta * (d - self.score_mean)
        return self

    def merge(self, other: PairedSummary) -> PairedSummary:
        """Fold ``other`` in (counts add; moments by Chan's formula); returns ``self``."""
        n1, n2 = self.score_n, other.score_n
        if n2:
            n = n1 + n2
            delta = other.score_mean - self.score_mean
            self.score_mean += delta * n2 / n
            self.score_m2 += other.score_m2 + delta * delta * n1 * n2 / n
        for key in COUNT_KEYS:
            setattr(self, key, getattr(self, key) + getattr(other, key))
        return self

    @property
    def score_variance(self) -> float:
        """Sample variance of the score differences (0 with fewer than two)."""
        return self.score_m2 / (self.score_n - 1) if self.score_n > 1 else 0.0

    def copy(self) -> PairedSummary:
        return PairedSummary(**self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The wire form: a flat map of ints and floats."""
        return {key: getattr(self, key) for key in SHADOW_KEYS}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PairedSummary:
        """Read :meth:`to_dict` (a checked wire map); unknown keys are ignored, missing ones are 0."""
        out = cls(**{k: int(d.get(k, 0)) for k in COUNT_KEYS})
        out.score_mean = float(d.get("score_mean", 0.0))
        out.score_m2 = float(d.get("score_m2", 0.0))
        return out

    @classmethod
    def merged(cls, items: Iterable[PairedSummary | Mapping[str, Any] | None]) -> PairedSummary:
        """One summary of many (wire maps or summaries; ``None`` skipped)."""
        out = cls()
        for item in items:
            if item is not None:
                out.merge(item if isinstance(item, PairedSummary) else cls.from_dict(item))
        return out
