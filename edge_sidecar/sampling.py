"""Which rows get profiled: deterministic by request id, or seeded random.

Sampling only thins what goes into the sketches. Row counters stay exact because the monitor
passes the number of rows seen before sampling as ``rows_observed`` to the window profile.

Deterministic mode hashes the request id (BLAKE2b keyed with the seed), so every replica and every
retry of the same request makes the same decision, and a caller can trace a sampled request end to
end. Rows without a request id fall back to the seeded generator.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Sampler"]

_SCALE = float(1 << 64)


class Sampler:
    """Keep a row with probability ``rate``; ``mode`` is ``"request_id"`` or ``"random"``."""

    __slots__ = ("rate", "mode", "seed", "_key", "_rng", "_np_rng", "_threshold")

    def __init__(self, rate: float = 1.0, mode: str = "request_id", seed: int = 0) -> None:
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"sampling rate must be in (0, 1], got {rate}")
        if mode not in ("request_id", "random"):
            raise ValueError(f"sampling mode must be 'request_id' or 'random', got {mode!r}")
        self.rate = float(rate)
        self.mode = mode
        self.seed = int(seed)
        self._key = self.seed.to_bytes(8, "big", signed=True)
        self._rng = random.Random(self.seed)
        self._np_rng = np.random.default_rng(self.seed)
        self._threshold = int(self.rate * _SCALE)

    @property
    def keeps_all(self) -> bool:
        return self.rate >= 1.0

    def hash_unit(self, request_id: Any) -> float:
        """The request id's position in [0, 1): the same id always lands in the same place."""
        data = request_id if isinstance(request_id, bytes) else str(request_id).encode("utf-8", "replace")
        h = int.from_bytes(hashlib.blake2b(data, digest_size=8, key=self._key).digest(), "big")
        return h / _SCALE

    def keep(self, request_id: Any = None) -> bool:
        """Decide for one row."""
        if self.rate >= 1.0:
            return True
        if request_id is not None and self.mode == "request_id":
            data = request_id if isinstance(request_id, bytes) else str(request_id).encode("utf-8", "replace")
            return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=self._key).digest(), "big") < self._threshold
        return self._rng.random() < self.rate

    def mask(self, n: int, request_ids: Sequence[Any] | np.ndarray | Any = None) -> np.ndarray:
        """Decide for ``n`` rows at once; ``request_ids`` is one id for all rows or one per row."""
        if self.rate >= 1.0:
            return np.ones(n, dtype=bool)
        if request_ids is None or self.mode != "request_id":
            return self._np_rng.random(n) < self.rate
        if isinstance(request_ids, str | bytes | int) or np.ndim(request_ids) == 0:
            return np.full(n, self.keep(request_ids), dtype=bool)
        ids = list(request_ids)
        if len(ids) != n:
            raise ValueError(f"{len(ids)} request ids for {n} rows")
        return np.asarray([self.keep(r) for r in ids], dtype=bool)
