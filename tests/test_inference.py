"""The inference core by hand: intervals against normal theory, p-values consistent with the intervals (skewed
statistics included), Holm, exact binomial bounds, and pairing that counts what it loses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vlmlab.analysis.inference import (
    binomial_mde,
    binomial_upper,
    estimate,
    holm,
    pooled_mean,
    sample,
)
from vlmlab.analysis.paired import pair_frames


def _sample(diffs, seeds=1):
    n = len(diffs)
    frame = pd.DataFrame(
        {
            "task": "t",
            "item_id": np.tile(np.arange(n), seeds),
            "seed": np.repeat(np.arange(seeds), n),
            "one": 1.0,
            "d": np.tile(diffs, seeds),
        }
    )
    return sample(frame, ["one", "d"])


def test_a_smooth_mean_matches_normal_theory_and_repeated_seeds_add_nothing():
    rng = np.random.default_rng(0)
    d = rng.normal(0.1, 1.0, 900)
    e = estimate(_sample(d), pooled_mean)
    se = d.std(ddof=1) / 30
    assert e.value == pytest.approx(d.mean())
    assert e.se == pytest.approx(se, rel=0.08) and e.low == pytest.approx(d.mean() - 1.96 * se, abs=0.2 * se)
    # the same answers under three seeds are one question each: the interval does not shrink
    three = estimate(_sample(d, seeds=3), pooled_mean)
    assert (three.questions, three.rows, three.seeds) == (900, 2700, 3)
    assert three.high - three.low == pytest.approx(e.high - e.low, rel=1e-9)


@pytest.mark.parametrize(
    "diffs",
    [
        np.r_[np.ones(3), np.zeros(297)],  # 3 rare hits of 300: a strongly skewed statistic
        np.r_[np.ones(12), np.zeros(288)],
        np.r_[np.ones(40), -np.ones(10), np.zeros(250)],
        np.r_[np.ones(10), -np.ones(12), np.zeros(278)],
    ],
    ids=["rare-3", "rare-12", "clear", "balanced"],
)
def test_p_values_agree_with_the_interval(diffs):
    """p < 0.05 exactly when the 95% interval excludes 0 (BCa's achieved significance level; for a skewed
    statistic a level beyond what BCa's bound reaches gives p 0, not a spurious 1)."""
    e = estimate(_sample(diffs), pooled_mean)
    assert (e.p_two(0) < 0.05) == (e.above(0) or e.below(0)), (e.text(), e.p_above, e.p_below)


def test_zero_spread_and_no_questions():
    same = estimate(_sample(np.zeros(50)), pooled_mean)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0) and same.p_two(0) == 1.0
    none = estimate(_sample(np.zeros(0)), pooled_mean)
    assert none.questions == 0 and np.isnan(none.value) and np.isnan(none.low)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 → 3 × 0.01, max(0.03, 2 × 0.03), max(0.06, 1 × 0.04); NaN takes no part
    assert holm([0.04, 0.01, float("nan"), 0.03]) == pytest.approx([0.06, 0.03, float("nan"), 0.06], nan_ok=True)


def test_exact_binomial_bounds():
    assert binomial_upper(0, 300) == pytest.approx(1 - 0.025 ** (1 / 300))  # Clopper–Pearson at 0 hits
    # 300 questions, chance 0.01: the one-sided 2.5% test needs 8 hits (P(X ≥ 8 | 0.01) = 0.011 < 0.025 ≤
    # P(X ≥ 7) = 0.033); P(X ≥ 8) reaches 0.80 at a rate of 0.0339, 0.024 above chance
    assert binomial_mde(300, 0.01) == pytest.approx(0.0239, abs=0.0005)


def test_pairing_counts_missing_and_unpaired_rows():
    keys = ["seed", "task", "item_id"]
    a = pd.DataFrame({"seed": 0, "task": "t", "item_id": [1, 2, 3, 4], "value_ref": [1.0, np.nan, 0.0, 1.0]})
    b = pd.DataFrame({"seed": 0, "task": "t", "item_id": [1, 2, 3, 5], "value_level": [1.0, 1.0, np.nan, 0.0]})
    p = pair_frames(a, b, keys)
    # items 1-3 pair; 2 and 3 have a missing value on one side (left out, counted); 4 and 5 have no partner
    assert len(p.frame) == 1 and p.missing_rows == 2 and p.missing_questions == 2 and p.unpaired_rows == 2
    assert "2 pairs with a missing score left out, 2 questions entirely" in p.lost_text()
