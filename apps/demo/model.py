"""Real models for the demo: digit classifiers trained at start-up on scikit-learn's bundled images.

The 8x8 digits echo a camera model: 64 pixel intensities in, a predicted digit and its confidence
out. Version ``v1`` is the production model; ``v2`` is a harmless canary (another regularisation);
the bad canary learned from partly shuffled labels, so its confidence and accuracy drop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from driftline.errors import MissingExtraError

__all__ = ["DigitModel", "FEATURES", "camera_change", "load_digits_split", "train_models"]

FEATURES = [f"px_{r}_{c}" for r in range(8) for c in range(8)]


@dataclass
class DigitModel:
    """A trained classifier with a version; ``predict`` returns (label, score) arrays."""

    version: str
    estimator: object
    extra_latency_ms: float = 0.0

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        proba = self.estimator.predict_proba(x)  # type: ignore[attr-defined]
        return proba.argmax(axis=1), proba.max(axis=1)


def load_digits_split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and serve halves of the bundled digits data set (no download)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise MissingExtraError("scikit-learn", "demo") from None
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order].astype(np.float64), y[order]
    half = len(x) // 2
    return x[:half], y[:half], x[half:], y[half:]


def train_models(x: np.ndarray, y: np.ndarray, seed: int, bad_canary: bool) -> dict[str, DigitModel]:
    """Fit v1 (production) and v2 (canary; regressed when ``bad_canary``)."""
    from sklearn.linear_model import LogisticRegression

    v1 = LogisticRegression(max_iter=400, C=1.0).fit(x, y)
    if bad_canary:
        rng = np.random.default_rng(seed + 1)
        noisy = y.copy()
        flip = rng.random(len(y)) < 0.6
        noisy[flip] = rng.integers(0, 10, int(flip.sum()))
        v2 = LogisticRegression(max_iter=400, C=0.002).fit(x, noisy)
        return {"v1": DigitModel("v1", v1), "v2": DigitModel("v2", v2, extra_latency_ms=6.0)}
    v2 = LogisticRegression(max_iter=400, C=0.5).fit(x, y)
    return {"v1": DigitModel("v1", v1), "v2": DigitModel("v2", v2)}


def camera_change(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A replaced camera: darker, lower contrast, noisier sensor (pixels stay in 0..16)."""
    return np.clip(x * 0.55 + 4.0 + rng.normal(0, 1.5, x.shape), 0, 16)
