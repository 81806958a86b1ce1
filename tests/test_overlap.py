"""`overlap`: contingency statistics on constructed correctness vectors where the answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _analysis import computed_section, round_trip
from vlmlab.analysis.overlap import Overlap, correctness, intersections, pair_stats
from vlmlab.study.data import StudyData
from vlmlab.study.spec import study_spec_from_dict


def test_identical_variants():
    a = np.array([1, 0, 1, 1, 0, 1], dtype=bool)
    s = pair_stats(a, a.copy())
    assert s["flip_a_to_b"] == s["flip_b_to_a"] == 0 and s["phi"] == 1.0 and s["mcnemar_p"] == 1.0
    assert s["jaccard"] == 1.0 and s["churn"] == 0 and s["verdict"] == "B solves about the same questions"
    constant = np.ones(5, dtype=bool)  # φ's denominator is 0; identical still means φ = 1
    assert pair_stats(constant, constant)["phi"] == 1.0


def test_disjoint_solvers_oracle_is_the_sum():
    a = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    b = np.array([0, 0, 0, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    s = pair_stats(a, b)
    assert s["both"] == 0 and s["oracle"] == pytest.approx(s["acc_a"] + s["acc_b"]) == pytest.approx(0.5)
    assert s["flip_a_to_b"] == 1.0 and s["flip_b_to_a"] == 1.0 and s["jaccard"] == 0.0


def test_hand_computed_mcnemar_phi_and_verdicts():
    # 10 discordant items all in B's favour: exact two-sided p = 2 * 0.5**10
    a = np.array([0] * 10 + [1] * 20 + [0] * 10, dtype=bool)
    b = np.array([1] * 10 + [1] * 20 + [0] * 10, dtype=bool)
    s = pair_stats(a, b)
    assert s["mcnemar_p"] == pytest.approx(2 * 0.5**10)
    # φ from the 2x2 table both 20, only_a 0, only_b 10, neither 10
    assert s["phi"] == pytest.approx((20 * 10 - 0) / np.sqrt(20 * 20 * 30 * 10))
    assert s["verdict"] == "B solves more questions"
    # 20 items swap, 10 each way: lots of churn, no net gain
    c = np.array([1] * 10 + [0] * 10 + [1] * 20, dtype=bool)
    d = np.array([0] * 10 + [1] * 10 + [1] * 20, dtype=bool)
    s = pair_stats(c, d)
    assert s["net_gain"] == 0 and s["churn"] == 0.5 and s["mcnemar_p"] == 1.0
    # no significant net gain over 40 items is not evidence of none: the old verdict "different (no significant net
    # gain)" read it as "as many"; the net gain's interval (about ±0.2) is far wider than the ±0.02 margin
    assert s["net_low"] < -0.1 and s["net_high"] > 0.1
    assert s["verdict"] == "B solves different questions; whether as many is not resolved"
    assert pair_stats(c, d, margin=0.5)["verdict"] == "B solves as many, different questions"


def _study(correct_by_variant):
    levels = {v: {"model.llm.id": "llama1-tiny"} for v in correct_by_variant}
    spec = study_spec_from_dict(
        {"name": "s", "base": "easy-vqa-tiny", "factors": {"llm": {"keys": ["model.llm.id"], "levels": levels}}}
    )
    rows = [
        {
            "variant": v,
            "llm": v,
            "seed": 0,
            "mode": "clean",
            "task": "t",
            "item_id": f"q{i}",
            "category": "all",
            "correct": bool(c),
            "score": float(c),
        }
        for v, cs in correct_by_variant.items()
        for i, c in enumerate(cs)
    ]
    return StudyData(Path("."), spec, {}, pd.DataFrame(rows), pd.DataFrame())


def test_intersections_and_section_from_records():
    study = _study({"x": [1, 1, 0, 0], "y": [1, 0, 1, 0], "z": [1, 0, 0, 0]})
    wide = correctness(study.results)
    table = intersections(wide)
    assert table["items"].sum() == 4 and table.iloc[0]["items"] == 1  # four distinct patterns, one item each
    result = round_trip(Overlap(Overlap.Params()).compute(study, []))
    assert len(result.pairs) == 3 and result.oracle["oracle_accuracy"].iloc[0] == 0.75
    section = computed_section(Overlap(Overlap.Params()), study)
    assert section.blocks
