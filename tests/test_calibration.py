"""Calibration metrics: hand-worked values, bin edges, a calibrated sample, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from vlmlab.analysis.calibration import (
    brier_score,
    expected_calibration_error,
    maximum_calibration_error,
    reliability_table,
)


def test_hand_worked_example():
    conf, correct = [0.9, 0.9, 0.1, 0.1], [1, 0, 0, 0]
    # bin (0.8, 0.9]: accuracy 0.5 at confidence 0.9 -> 0.4; bin (0, 0.1]: 0 at 0.1 -> 0.1; weights 2/4 each
    assert expected_calibration_error(conf, correct, n_bins=10) == pytest.approx(0.25)
    assert maximum_calibration_error(conf, correct, n_bins=10) == pytest.approx(0.4)
    assert brier_score(conf, correct) == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)


def test_bin_edges_are_right_closed_and_cover_zero_and_one():
    table = reliability_table([0.0, 0.5, 0.5000001, 1.0], [0, 1, 1, 1], n_bins=2)
    assert table["n"].tolist() == [2, 2]  # 0 and 0.5 in (0, 0.5]; just above 0.5 and 1.0 in (0.5, 1]
    assert expected_calibration_error([1.0, 1.0], [1, 1]) == 0.0


def test_a_calibrated_sample_has_small_ece_and_overconfidence_is_caught():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0, 1, 20000)
    correct = rng.uniform(0, 1, 20000) < conf
    assert expected_calibration_error(conf, correct) < 0.02
    assert expected_calibration_error(np.full(1000, 0.95), np.arange(1000) < 500) == pytest.approx(0.45)


def test_bad_input():
    with pytest.raises(ValueError, match="same length"):
        expected_calibration_error([0.5, 0.5], [1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1.5], [1])
    assert np.isnan(expected_calibration_error([], []))


def test_temperature_scaling_recovers_a_systematically_overconfident_model():
    import numpy as np

    from vlmlab.analysis.calibration import apply_temperature, expected_calibration_error, fit_temperature

    rng = np.random.default_rng(0)
    true_p = rng.uniform(0.05, 0.95, 20000)
    correct = rng.random(20000) < true_p
    logit = np.log(true_p) - np.log1p(-true_p)
    overconfident = 1 / (1 + np.exp(-3.0 * logit))  # the true log-odds, tripled
    t = fit_temperature(overconfident[:10000], correct[:10000])
    assert t == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(overconfident[10000:], correct[10000:])
    after = expected_calibration_error(apply_temperature(overconfident[10000:], t), correct[10000:])
    assert after < 0.02 < before
    assert fit_temperature([0.9, 0.8], [True, True]) == 1.0  # nothing to fit with one outcome


def test_ece_pairs_give_a_verdict_with_a_paired_bootstrap_interval():
    import pandas as pd

    from vlmlab.analysis.calibration import bootstrap_ece_difference, ece_pairs

    rng = np.random.default_rng(0)
    n = 600
    p = rng.uniform(0.05, 0.95, n)
    correct = rng.random(n) < p  # calibrated: right as often as it says
    over = np.clip(p + 0.3, 0, 1)  # the same answers, 0.3 more confident than it should be
    diff, low, high = bootstrap_ece_difference(p, correct, over, correct)
    assert diff == pytest.approx(expected_calibration_error(p, correct) - expected_calibration_error(over, correct))
    assert low <= diff <= high < 0
    same = bootstrap_ece_difference(p, correct, p, correct)
    assert same == (0.0, 0.0, 0.0)

    frame = pd.DataFrame(
        [
            {"variant": v, "task": "t", "seed": s, "item_id": str(i), "confidence": c[i], "correct": bool(correct[i])}
            for v, c in (("good", p), ("over", over))
            for s in (0, 1)
            for i in range(n)
        ]
    )
    pairs = ece_pairs(frame, ["good", "over"], 15)
    row = pairs.iloc[0]
    assert (row["first"], row["second"], row["verdict"]) == ("good", "over", "first better calibrated")
    assert row["seeds"] == 2 and row["seeds_same_sign"] == 2 and row["n"] == 2 * n
