"""The coordinated distinct sample: exact counts, exact merges, round trips, and the unseen-mass verdicts.

The oracle is the raw data: for every sampled label the true count, and for the unseen share the
true share of current rows on labels the reference never had.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.columns import CategoricalColumn
from driftline.distinct import DistinctSample, hash_strings, unseen_mass, value_hash
from driftline.profile import ProfileConfig, StreamKey, WindowProfile
from driftline.stats.report import compare_profiles


def sample_of(labels: np.ndarray, k: int = 64, batches: int = 1) -> DistinctSample:
    s = DistinctSample(k)
    for part in np.array_split(labels, batches):
        u, n = np.unique(part, return_counts=True)
        s.update_batch(u, n)
    return s


def test_hash_is_stable_and_independent_of_array_width() -> None:
    a = hash_strings(np.array(["a", "bb", "ccc"]))
    b = hash_strings(np.array(["a", "bb", "ccc", "a-much-longer-label"]))[:3]
    assert a.tolist() == b.tolist()
    assert value_hash("bb") == int(a[1])
    # a fixed value, so that every process and every version agrees on which labels are sampled
    assert value_hash("driftline") == value_hash("driftline") and value_hash("a") != value_hash("b")
    h = hash_strings(np.char.add("x", np.arange(200_000).astype(str)))
    assert np.unique(h).size == h.size
    # uniform enough for bottom-k: each eighth of the range holds about an eighth of the labels
    counts = np.bincount((h >> np.uint64(61)).astype(np.int64), minlength=8)
    assert counts.min() > 0.9 * h.size / 8 and counts.max() < 1.1 * h.size / 8


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 400), min_size=1, max_size=3000), st.integers(1, 6))
def test_every_sampled_count_is_exact_in_any_batching(values: list[int], batches: int) -> None:
    labels = np.array([f"v{v}" for v in values])
    truth = Counter(labels.tolist())
    s = sample_of(labels, k=32, batches=batches)
    items = s.items()
    assert len(items) == min(32, len(truth))
    for label, count in items.items():
        assert count == truth[label]
    # the sample is exactly the 32 labels with the smallest hashes
    smallest = sorted(truth, key=value_hash)[:32]
    assert sorted(items) == sorted(smallest)
    assert s.exact == (len(truth) <= 32)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=1500), st.lists(st.integers(100, 600), max_size=1500),
       st.lists(st.integers(0, 900), max_size=1500))
def test_merge_is_exact_associative_and_commutative(a: list[int], b: list[int], c: list[int]) -> None:
    parts = [np.array([f"v{v}" for v in xs], dtype=str) for xs in (a, b, c)]
    whole = sample_of(np.concatenate(parts), k=24)

    def merged(order: list[int]) -> DistinctSample:
        out = DistinctSample(24)
        for i in order:
            if parts[i].size:
                out.merge(sample_of(parts[i], k=24))
        return out

    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        m = merged(order)
        assert m.items() == whole.items() and m.threshold == whole.threshold


def test_round_trip_and_refusals() -> None:
    s = sample_of(np.char.add("id", np.arange(5000).astype(str)), k=50)
    back = DistinctSample.from_dict(s.to_dict())
    assert back.items() == s.items() and back.threshold == s.threshold and back.k == 50
    bad = s.to_dict() | {"k": 10}
    with pytest.raises(ValueError):
        DistinctSample.from_dict(bad)
    col = CategoricalColumn()
    col.update_array(np.array(["a", "b", "a"]))
    again = CategoricalColumn.from_dict(col.to_dict())
    assert again.ds is not None and again.ds.items() == {"a": 2, "b": 1}


def true_unseen_share(ref: np.ndarray, cur: np.ndarray) -> float:
    return float(np.mean(~np.isin(cur, np.unique(ref))))


def test_unseen_share_estimate_tracks_the_raw_data() -> None:
    rng = np.random.default_rng(5)
    for rep, new_share in ((1, 0.0), (5, 0.3), (5, 1.0), (2, 0.6)):
        ref = np.char.add("id", rng.integers(0, 50_000, 50_000 * rep).astype(str))
        old = np.char.add("id", rng.integers(0, 50_000, int(50_000 * rep * (1 - new_share))).astype(str))
        new = np.char.add("new", rng.integers(0, 50_000, int(50_000 * rep * new_share)).astype(str))
        cur = np.concatenate([old, new])
        u = unseen_mass(sample_of(ref, 256), sample_of(cur, 256), ref.size, cur.size)
        truth = true_unseen_share(ref, cur)
        assert abs(u.current - truth) <= 4 * u.se + 0.02, (rep, new_share, u, truth)
        assert u.excess <= truth + 1e-9  # a lower bound of what moved


def cat_profile(labels: np.ndarray) -> WindowProfile:
    cfg = ProfileConfig(categorical=frozenset({"c"}))
    return WindowProfile(StreamKey.of("m", "v"), 0, 1, cfg).update({"c": labels})


@pytest.mark.parametrize("distinct", [10_000, 100_000])
def test_all_unseen_values_are_drift_at_any_cardinality(distinct: int) -> None:
    """Far past the frequent-items capacity, a vocabulary swapped for another is drift; ids are not."""
    rng = np.random.default_rng(distinct)
    n = 300_000
    ref = np.char.add("a", rng.integers(0, distinct, n).astype(str))
    swapped = np.char.add("b", rng.integers(0, distinct, n).astype(str))
    same = np.char.add("a", rng.integers(0, distinct, n).astype(str))
    item = compare_profiles(cat_profile(ref), cat_profile(swapped)).features[0]
    assert item.drift_detected and item.effect >= 0.5, item
    assert compare_profiles(cat_profile(ref), cat_profile(same)).features[0].drift_detected is False
    # ids unique per row: every current id is new, and so it would be in a sample of the same kind
    ids = np.char.add("u", rng.permutation(2 * n).astype(str))
    item = compare_profiles(cat_profile(ids[:n]), cat_profile(ids[n:])).features[0]
    assert item.drift_detected is False and item.effect == 0.0
