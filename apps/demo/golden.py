"""The demo's golden-set conformance: one device's camera driver quantises a pixel before the model sees it.

The cloud's golden set is the production model's class probabilities for 200 serving images. Every
device runs it through its own inference path (the driver, then the model) with the sidecar's SDK
callback at start; the device whose driver coarsens one pixel to three levels fails its first run,
the others reproduce the cloud's numbers exactly.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from driftline.conformance import GoldenSet, Tolerances, write_golden_file

from .model import FEATURES, DigitModel

__all__ = ["BAD_DRIVER", "GOOD_DRIVER", "QUANTISED_PIXEL", "apply_driver", "build_golden", "device_predict"]

GOOD_DRIVER = "drv-1.4"
BAD_DRIVER = "drv-2.0-q"
QUANTISED_PIXEL = FEATURES.index("px_3_3")
"""The one input the bad driver quantises (a central pixel, so digits depend on it)."""


def apply_driver(driver: str, x: np.ndarray) -> np.ndarray:
    """What the device's camera driver hands the model: the bad driver rounds one pixel to 0, 8 or 16."""
    if driver != BAD_DRIVER:
        return x
    x = np.array(x, dtype=np.float64, copy=True)
    x[:, QUANTISED_PIXEL] = np.round(x[:, QUANTISED_PIXEL] / 8.0) * 8.0
    return x


def build_golden(model: DigitModel, model_name: str, x: np.ndarray, path: Path, cases: int = 200) -> Path:
    """The cloud's golden set: inputs and the production model's probabilities, written to ``path``."""
    xs = np.ascontiguousarray(x[:cases], dtype=np.float64)
    proba = model.estimator.predict_proba(xs)  # type: ignore[attr-defined]
    write_golden_file(path, GoldenSet(model_name, model.version, {"pixels": xs}, {"proba": proba},
                                      Tolerances(atol=1e-6, rtol=1e-6, min_top1_agreement=1.0, max_score_ks=0.02),
                                      name=f"digits-{model.version}", created_at=time.time()))
    return path


def device_predict(driver: str, models: Mapping[str, DigitModel]) -> Any:
    """The SDK callback a device's sidecar runs golden sets with: its driver, then its model."""

    def predict(golden: GoldenSet, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = apply_driver(driver, inputs["pixels"])
        return {"proba": models[golden.model_version].estimator.predict_proba(x)}  # type: ignore[attr-defined]

    return predict
