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


def _pairs_frame(confidences: dict, correct: dict, seeds=(0, 1)):
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "variant": v,
                "task": "t",
                "seed": s,
                "item_id": str(i),
                "confidence": c[i],
                "correct": bool(correct[v][i]),
            }
            for v, c in confidences.items()
            for s in seeds
            for i in range(len(c))
        ]
    )


def test_ce_pairs_give_a_verdict_with_an_interval_over_questions():
    from vlmlab.analysis.calibration import ce_pairs

    rng = np.random.default_rng(0)
    n = 600
    p = rng.uniform(0.05, 0.95, n)
    correct = rng.random(n) < p  # calibrated: right as often as it says
    over = np.clip(p + 0.3, 0, 1)  # the same answers, 0.3 more confident than it should be
    frame = _pairs_frame({"good": p, "over": over}, {"good": correct, "over": correct})
    row = ce_pairs(frame, ["good", "over"], 15).iloc[0]
    assert (row["first"], row["second"], row["verdict"]) == ("good", "over", "first better calibrated")
    assert row["ci_low"] <= row["difference"] <= row["ci_high"] < 0
    assert row["seeds"] == 2 and row["seeds_same_sign"] == 2 and row["n"] == 2 * n and row["questions"] == n
    assert row["ce_first"] < 0.05 < 0.2 < row["ce_second"]  # debiased: about 0 for the calibrated one


def test_the_debiased_error_does_not_reward_a_constant_confidence():
    """Two calibrated models, one always saying 0.6, one spreading its confidence: over 40 draws of 400 answers the
    binned ECE of the spread one is larger on average by about 0.05 (its 15 bins each hold a noisy share correct),
    while the debiased CE² of both averages about 0 (its estimator is unbiased); the pair verdict on one draw finds
    no difference."""
    import pandas as pd

    from vlmlab.analysis import calibration_error as ce
    from vlmlab.analysis.calibration import ce_pairs
    from vlmlab.analysis.inference import point

    def ce2(conf, right):
        f = pd.DataFrame({"task": "t", "item_id": np.arange(len(conf)), "c": conf, "y": right.astype(float)})
        return point(ce.ce_sample(f, ["c"], ["y"], 15), ce.single(15))

    ece_gap, ce_gap = [], []
    for draw in range(40):
        rng = np.random.default_rng(draw)
        n = 400
        spread = rng.uniform(0.1, 0.95, n)
        right_spread, right_const = rng.random(n) < spread, rng.random(n) < 0.6
        const = np.full(n, 0.6)
        ece_gap.append(
            expected_calibration_error(spread, right_spread) - expected_calibration_error(const, right_const)
        )
        ce_gap.append(ce2(spread, right_spread) - ce2(const, right_const))
    assert np.mean(ece_gap) > 0.03  # the binned ECE's bias, growing with the spread of confidences
    assert abs(np.mean(ce_gap)) < 3 * np.std(ce_gap) / np.sqrt(len(ce_gap))  # unbiased: mean 0 within its error
    frame = _pairs_frame({"const": const, "spread": spread}, {"const": right_const, "spread": right_spread}, (0,))
    assert ce_pairs(frame, ["const", "spread"], 15).iloc[0]["verdict"] == "no detectable difference"


def test_missing_confidence_is_counted_never_read_as_zero():
    """An answer without a confidence (NaN, as from an external predictions file) is left out and counted; a variant
    with none has no calibration at all (NaN, not an ECE of 0), and its pair says it was not tested."""
    from vlmlab.analysis.calibration import brier_score, ce_pairs

    conf = np.array([0.9, np.nan, 0.2, 0.7])
    right = np.array([True, True, False, True])
    table = reliability_table(conf, right)
    assert table["n"].sum() == 3
    none = np.full(4, np.nan)
    assert np.isnan(expected_calibration_error(none, right)) and np.isnan(brier_score(none, right))
    frame = _pairs_frame({"a": np.linspace(0.2, 0.9, 50), "b": np.full(50, np.nan)}, {"a": [1] * 50, "b": [1] * 50})
    row = ce_pairs(frame, ["a", "b"], 15).iloc[0]
    assert row["verdict"] == "not tested: no confidence" and row["missing"] == 100 and row["n"] == 0
