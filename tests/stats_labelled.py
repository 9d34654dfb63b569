"""Labelled drift cases: shapes x kinds of shift x sizes, each with the verdict a careful statistician gives.

Shared by ``tests/test_stats_labelled.py`` (asserts Driftline's default verdicts) and
``bench/bench_stats_verdicts.py`` (prints the table of cases where Driftline and Evidently disagree,
with the exact test and effect on the raw data, for docs/statistics.md).

A label says whether the *populations* differ materially, known by construction: a shift of 0.2 sd
or more, a 20% change of spread, a share move of 10 points, values the reference never had, are
drift; 0.01-0.02 sd, a 0.3-point share move and a fresh sample of the same population are not.
Sizes are chosen so that the sample can show it (a 0.2 sd shift is not claimed at 1,000 rows).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.stats.decision import DriftConfig
from driftline.stats.report import compare_profiles

__all__ = ["CASES", "Case", "driftline_verdict", "evidently_verdict", "exact_evidence"]

Gen = Callable[[np.random.Generator, int], np.ndarray]


@dataclass(frozen=True)
class Case:
    """One labelled comparison: reference and current generators, the size of each side, the truth."""

    name: str
    kind: str  # "numeric" or "categorical"
    ref: Gen
    cur: Gen
    n: int
    drift: bool

    def draw(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        return self.ref(rng, self.n), self.cur(rng, self.n)


# numeric shapes: (generator of the reference, its standard deviation)
SHAPES: dict[str, tuple[Callable[[np.random.Generator, int], np.ndarray], float]] = {
    "normal": (lambda r, n: r.normal(0.0, 1.0, n), 1.0),
    "lognormal": (lambda r, n: r.lognormal(0.0, 0.5, n), math.sqrt((math.exp(0.25) - 1) * math.exp(0.25))),
    "uniform": (lambda r, n: r.uniform(0.0, 1.0, n), math.sqrt(1 / 12)),
    "bimodal": (lambda r, n: np.where(r.random(n) < 0.5, r.normal(-2, 0.5, n), r.normal(2, 0.5, n)),
                math.sqrt(4 + 0.25)),
    "small_integer": (lambda r, n: r.poisson(4.0, n).astype(np.float64), 2.0),
    "rounded": (lambda r, n: np.round(r.normal(10.0, 2.0, n)), 2.0),
    "zero_inflated": (lambda r, n: np.where(r.random(n) < 0.6, 0.0, r.exponential(1.0, n)), math.sqrt(0.4 * 2 - 0.16)),
}


def _shifted(gen: Gen, by: float) -> Gen:
    return lambda r, n: gen(r, n) + by


def _scaled(gen: Gen, factor: float) -> Gen:
    def g(r: np.random.Generator, n: int) -> np.ndarray:
        x = gen(r, n)
        return (x - x.mean()) * factor + x.mean()
    return g


def _numeric_cases() -> list[Case]:
    cases = []
    for shape, (gen, sd) in SHAPES.items():
        cases.append(Case(f"{shape} +0.2sd n=1e5", "numeric", gen, _shifted(gen, 0.2 * sd), 100_000, True))
        cases.append(Case(f"{shape} +0.5sd n=1e3", "numeric", gen, _shifted(gen, 0.5 * sd), 1_000, True))
        cases.append(Case(f"{shape} sd x1.2 n=1e5", "numeric", gen, _scaled(gen, 1.2), 100_000, True))
        cases.append(Case(f"{shape} +0.015sd n=1e5", "numeric", gen, _shifted(gen, 0.015 * sd), 100_000, False))
        cases.append(Case(f"{shape} same n=1e4", "numeric", gen, gen, 10_000, False))
    normal, sd = SHAPES["normal"]
    cases += [
        Case("normal +0.2sd n=1e6", "numeric", normal, _shifted(normal, 0.2), 1_000_000, True),
        Case("normal sd x1.2 n=1e6", "numeric", normal, _scaled(normal, 1.2), 1_000_000, True),
        Case("normal +0.01sd n=1e6", "numeric", normal, _shifted(normal, 0.01), 1_000_000, False),
        Case("normal +0.02sd n=1e6", "numeric", normal, _shifted(normal, 0.02), 1_000_000, False),
        Case("normal same n=1e3", "numeric", normal, normal, 1_000, False),
    ]
    return cases


def _shares(labels: list[str], p: list[float]) -> Gen:
    arr, probs = np.array(labels), np.asarray(p, dtype=np.float64) / np.sum(p)
    return lambda r, n: r.choice(arr, n, p=probs)


def _ids(prefix: str, distinct: int) -> Gen:
    return lambda r, n: np.char.add(prefix, r.integers(0, distinct, n).astype(str))


def _with_new(gen: Gen, share: float) -> Gen:
    def g(r: np.random.Generator, n: int) -> np.ndarray:
        x = gen(r, n)
        x[r.random(n) < share] = "brand_new"
        return x
    return g


def _categorical_cases() -> list[Case]:
    two = ["a", "b"]
    five = ["a", "b", "c", "d", "e"]
    p5 = [0.3, 0.25, 0.2, 0.15, 0.1]
    p5_moved = [0.4, 0.2143, 0.1714, 0.1286, 0.0857]  # "a" 30% -> 40%, the rest in proportion
    p5_tiny = [0.303, 0.2489, 0.1991, 0.1493, 0.0996]  # "a" 30% -> 30.3%
    twenty = [f"c{i}" for i in range(20)]
    p20 = list(np.full(20, 0.05))
    cases = []
    for n, tag in ((10_000, "1e4"), (100_000, "1e5"), (1_000_000, "1e6")):
        cases.append(Case(f"binary 30%->40% n={tag}", "categorical", _shares(two, [0.3, 0.7]),
                          _shares(two, [0.4, 0.6]), n, True))
        cases.append(Case(f"5 cats 30%->40% n={tag}", "categorical", _shares(five, p5), _shares(five, p5_moved), n, True))
    for n, tag in ((100_000, "1e5"), (1_000_000, "1e6")):
        cases.append(Case(f"5 cats 30%->30.3% n={tag}", "categorical", _shares(five, p5), _shares(five, p5_tiny), n, False))
        cases.append(Case(f"binary 30%->30.3% n={tag}", "categorical", _shares(two, [0.3, 0.7]),
                          _shares(two, [0.303, 0.697]), n, False))
    cases += [
        Case("20 cats same n=1e3", "categorical", _shares(twenty, p20), _shares(twenty, p20), 1_000, False),
        Case("20 cats same n=1e5", "categorical", _shares(twenty, p20), _shares(twenty, p20), 100_000, False),
        Case("20 cats +10% new value n=1e4", "categorical", _shares(twenty, p20), _with_new(_shares(twenty, p20), 0.1),
             10_000, True),
        Case("100k ids all unseen n=3e5", "categorical", _ids("a", 100_000), _ids("b", 100_000), 300_000, True),
        Case("10k ids all unseen n=1e5", "categorical", _ids("a", 10_000), _ids("b", 10_000), 100_000, True),
        Case("100k ids same n=3e5", "categorical", _ids("a", 100_000), _ids("a", 100_000), 300_000, False),
        Case("5k ids same n=2e4", "categorical", _ids("a", 5_000), _ids("a", 5_000), 20_000, False),
    ]
    return cases


CASES: list[Case] = _numeric_cases() + _categorical_cases()


def profile(values: np.ndarray, kind: str) -> WindowProfile:
    cfg = ProfileConfig(categorical=frozenset({"x"}) if kind == "categorical" else frozenset())
    return WindowProfile(StreamKey.of("m", "v"), 0, 1, cfg).update({"x": values})


def driftline_verdict(ref: np.ndarray, cur: np.ndarray, kind: str, config: DriftConfig | None = None) -> tuple[bool, float]:
    """Driftline's default verdict from the two sides' profiles, and its effect size."""
    item = compare_profiles(profile(ref, kind), profile(cur, kind), config).features[0]
    return bool(item.drift_detected), float(item.effect or 0.0)


def exact_evidence(ref: np.ndarray, cur: np.ndarray, kind: str) -> tuple[float, float, str]:
    """The exact test p-value and effect on the raw data (scipy): what decides a disagreement.

    Numeric: two-sample KS p-value and the normed Wasserstein distance (W1 / reference std).
    Categorical: chi-square test of homogeneity and the total variation distance.
    """
    from scipy import stats

    if kind == "numeric":
        p = float(stats.ks_2samp(ref, cur).pvalue)
        w = float(stats.wasserstein_distance(ref, cur) / (np.std(ref) or 1.0))
        return p, w, "W1/sd"
    cats, inv = np.unique(np.concatenate([ref, cur]), return_inverse=True)
    r = np.bincount(inv[: ref.size], minlength=cats.size)
    c = np.bincount(inv[ref.size:], minlength=cats.size)
    p = float(stats.chi2_contingency(np.vstack([r, c]))[1]) if cats.size > 1 else 1.0
    return p, float(0.5 * np.abs(r / r.sum() - c / c.sum()).sum()), "TVD"


def evidently_verdict(ref: np.ndarray, cur: np.ndarray, kind: str) -> tuple[bool, float, str]:
    """Evidently 0.7's default stattest for the column (its own selection by size and type)."""
    import pandas as pd
    from evidently.legacy.calculations.stattests.registry import get_stattest

    warnings.simplefilter("ignore")
    ftype = "num" if kind == "numeric" else "cat"
    sr, sc = pd.Series(ref), pd.Series(cur)
    test = get_stattest(sr, sc, ftype, None)
    res = test(sr, sc, ftype, None)
    return bool(res.drifted), float(res.drift_score), test.name
