"""Default verdicts against labelled cases, the A/A false-alarm rate, and bounds on hard inputs.

The labels (tests/stats_labelled.py) are checked against the exact test and effect on the raw data;
Driftline's default verdicts from the profiles must equal them. Where Evidently's defaults disagree,
docs/statistics.md tabulates the case (bench/bench_stats_verdicts.py prints that table).
KLL compaction is random, so the hard-input bounds are asserted over 20 sketch draws of each case.
"""

from __future__ import annotations

import numpy as np
import pytest

from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.stats import exact_numeric_scores, numeric_scores
from driftline.stats.decision import DEFAULT_THRESHOLDS, DriftConfig
from driftline.stats.report import compare_profiles
from tests.stats_labelled import CASES, driftline_verdict, exact_evidence

ALPHA = DriftConfig().alpha


def test_the_suite_is_large_and_balanced() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)
    assert sum(c.drift for c in CASES) >= 15 and sum(not c.drift for c in CASES) >= 15
    assert {c.n for c in CASES} >= {1_000, 10_000, 100_000, 1_000_000}


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c.name for c in CASES])
def test_default_verdict_matches_the_label(index: int) -> None:
    case = CASES[index]
    ref, cur = case.draw(index)
    # the label is what the exact test and effect on the raw data say
    p, effect, _ = exact_evidence(ref, cur, case.kind)
    threshold = DEFAULT_THRESHOLDS["wasserstein" if case.kind == "numeric" else "tvd"]
    assert (p < ALPHA and effect >= threshold) == case.drift, (case.name, p, effect)
    drift, ours = driftline_verdict(ref, cur, case.kind)
    assert drift == case.drift, (case.name, ours, effect)


AA_SHAPES = {
    "normal": lambda r, n: r.normal(0, 1, n),
    "lognormal": lambda r, n: r.lognormal(0, 1, n),
    "ties": lambda r, n: np.round(r.normal(0, 1, n), 1),
    "poisson": lambda r, n: r.poisson(3, n).astype(float),
    "pareto": lambda r, n: r.pareto(1.1, n),
    "zero_inflated": lambda r, n: np.where(r.random(n) < 0.7, 0.0, r.exponential(1, n)),
    "cat5": lambda r, n: r.choice(np.array(list("abcde")), n, p=[0.4, 0.3, 0.15, 0.1, 0.05]),
    "zipf200": lambda r, n: np.char.add("c", (r.zipf(1.5, n) % 200).astype(str)),
    "ids5k": lambda r, n: np.char.add("i", r.integers(0, 5000, n).astype(str)),
}
CATEGORICAL = frozenset({"cat5", "zipf200", "ids5k"})


def test_random_splits_raise_at_most_one_percent_false_alarms_per_column() -> None:
    """200 random halvings of one table of varied shapes, 150 to 20,000 rows a side, default settings."""
    rng = np.random.default_rng(7)
    cfg = ProfileConfig(categorical=CATEGORICAL)
    flags = dict.fromkeys(AA_SHAPES, 0)
    splits = 200
    for _ in range(splits):
        n = int(rng.choice([150, 300, 1_000, 3_000, 20_000]))
        table = {k: g(rng, 2 * n) for k, g in AA_SHAPES.items()}
        idx = rng.permutation(2 * n)
        sides = [WindowProfile(StreamKey.of("m", "v"), 0, 1, cfg).update({k: v[part] for k, v in table.items()})
                 for part in (idx[:n], idx[n:])]
        report = compare_profiles(*sides)
        for item in report.features:
            flags[item.name] += item.drift_detected
    rates = {k: v / splits for k, v in flags.items()}
    assert max(rates.values()) <= 0.01, rates


def column(values: np.ndarray):  # noqa: ANN201 - a NumericColumn
    return WindowProfile(StreamKey.of("m", "v"), 0, 1, ProfileConfig()).update({"x": values}).features["x"]


def _tied(r: np.random.Generator, n: int, s: float) -> np.ndarray:
    """Small integers whose reference CDF is 0.3 exactly at a value: the target of an edge."""
    p = [0.1, 0.2, 0.3, 0.25, 0.15] if s == 0 else [0.1, 0.2, 0.32, 0.23, 0.15]
    return r.choice(np.arange(5.0), n, p=p)


HARD = {
    "tied_edge": _tied,
    "zero_inflated": lambda r, n, s: np.where(r.random(n) < 0.7, 0.0, r.exponential(1 + s, n)),
    "point_mass_tail": lambda r, n, s: np.where(r.random(n) < 0.5, 5.0, 5 + r.pareto(2, n) * (1 + s)),
    "pareto_1.1": lambda r, n, s: r.pareto(1.1, n) * (1 + s),
    "large_offset": lambda r, n, s: 1e7 + r.normal(s * 0.25, 0.25, n),
    "epoch_ms": lambda r, n, s: 1.7e12 + r.uniform(0, 86_400e3 * (1 + s), n),
}
# |sketch - exact| <= absolute + relative * exact at the default k=400 (docs/statistics.md)
HARD_BOUNDS = {"ks": (0.02, 0.0), "psi": (0.02, 0.3), "jensen_shannon": (0.03, 0.0), "hellinger": (0.03, 0.0),
               "wasserstein": (0.08, 0.2)}
DRAWS = 20


@pytest.mark.parametrize("name", sorted(HARD))
def test_hard_inputs_stay_within_bounds_over_repeated_sketch_draws(name: str) -> None:
    rng = np.random.default_rng(len(name))
    for shift in (0.0, 0.3):
        ref, cur = HARD[name](rng, 200_000, 0.0), HARD[name](rng, 200_000, shift)
        exact = exact_numeric_scores(ref, cur)
        worst = dict.fromkeys(HARD_BOUNDS, 0.0)
        for _ in range(DRAWS):
            s = numeric_scores(column(ref), column(cur))
            for method, (absolute, relative) in HARD_BOUNDS.items():
                err = abs(s.as_dict()[method] - exact[method])
                worst[method] = max(worst[method], err)
                assert err <= absolute + relative * exact[method], (name, shift, method, s.as_dict(), exact)
                assert abs(s.effects[method] - exact[method]) <= absolute + relative * exact[method]


@pytest.mark.parametrize("method", ["psi", "jensen_shannon", "hellinger", "wasserstein"])
def test_tied_columns_give_identical_verdicts_in_identical_runs(method: str) -> None:
    """A tied value's CDF at a bin edge used to flip the edge between runs; now every run agrees."""
    rng = np.random.default_rng(12)
    ref, cur = _tied(rng, 200_000, 0.0), _tied(rng, 200_000, 1.0)
    cfg = DriftConfig(numeric_method=method, thresholds={method: 0.03})
    verdicts, scores = set(), []
    for _ in range(DRAWS):
        item = compare_profiles(WindowProfile(StreamKey.of("m", "v"), 0, 1).update({"x": ref}),
                                WindowProfile(StreamKey.of("m", "v"), 0, 1).update({"x": cur}), cfg).features[0]
        verdicts.add(item.drift_detected)
        scores.append(item.scores[method])
    assert len(verdicts) == 1
    if method != "wasserstein":  # binned: the same edges every run, so only the masses' noise is left
        assert max(scores) - min(scores) <= 0.01, scores
