"""Synthetic labelled data for the label-free performance estimate (tests and bench/bench_cbpe_vs_nannyml.py).

Two features ``x0, x1``; the true label model ``P(y = 1 | x) = σ(1.5 x0 − x1 − 0.5)`` is fixed; the
model's score ``σ(0.6 · logit + 0.3)`` ranks rows by the true logit but is miscalibrated (too flat,
shifted), so the estimate must calibrate it. Covariate shift moves the ``x`` distribution (``P(y|x)``
unchanged, hence ``P(y|score)`` unchanged: what CBPE assumes); concept shift changes ``P(y|x)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["THRESHOLD", "draw"]

THRESHOLD = 0.5


def draw(rng: np.random.Generator, n: int, *, shift: float = 0.0, scale: float = 1.0,
         concept: float = 0.0) -> dict[str, np.ndarray]:
    """``n`` rows: ``shift``/``scale`` move x (covariate shift); ``concept`` moves the true logit alone."""
    x = rng.normal(shift, scale, (n, 2))
    logit = 1.5 * x[:, 0] - 1.0 * x[:, 1] - 0.5
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(logit + concept)))).astype(np.int64)
    score = 1.0 / (1.0 + np.exp(-(0.6 * logit + 0.3)))
    return {"x0": x[:, 0], "x1": x[:, 1], "score": score, "y": y}
