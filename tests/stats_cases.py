"""Seeded reference/current pairs over many distribution shapes, shared by the statistics tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["DISTRIBUTIONS", "SHIFTS", "make_pair"]

Gen = Callable[[np.random.Generator, int, float], np.ndarray]


def _mostly_missing(rng: np.random.Generator, n: int, s: float) -> np.ndarray:
    x = rng.normal(s, 1, n)
    x[rng.random(n) < 0.9] = np.nan
    return x


DISTRIBUTIONS: dict[str, Gen] = {
    "normal": lambda rng, n, s: rng.normal(s, 1.0, n),
    "normal_scale": lambda rng, n, s: rng.normal(0.0, 1.0 + s, n),  # CDFs that cross: W1 is more than the mean
    "lognormal": lambda rng, n, s: rng.lognormal(s, 1.0, n),
    "bimodal": lambda rng, n, s: np.where(rng.random(n) < 0.5 + s / 4, rng.normal(-2, 0.5, n), rng.normal(2, 0.5, n)),
    "heavy_ties": lambda rng, n, s: np.round(rng.normal(s, 1.0, n), 1),
    "small_integer": lambda rng, n, s: rng.poisson(3.0 + 2 * s, n).astype(float),
    "constant": lambda rng, n, s: np.full(n, 7.0 + (1.0 if s >= 0.5 else 0.0)),
    "mostly_missing": _mostly_missing,
}

SHIFTS = (0.0, 0.1, 0.5)


def make_pair(name: str, shift: float, seed: int, n_ref: int = 20_000, n_cur: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gen = DISTRIBUTIONS[name]
    return gen(rng, n_ref, 0.0), gen(rng, n_cur, shift)
