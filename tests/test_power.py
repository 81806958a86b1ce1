"""Power: the minimum detectable effect, its formula checked by hand and by simulation, and `--check --pilot`."""

from __future__ import annotations

import math

import numpy as np
import pytest

from _studies import null_probs, synthetic, write_finished
from vlmlab.analysis.paired import compare, pair_levels
from vlmlab.analysis.power import minimum_detectable_effect, pilot_variance, planned_power, variance_components


def test_the_mde_formula_by_hand():
    # 2.80 standard errors (z 1.960 + z 0.842) of a mean of 400 paired differences with sd 0.5
    assert minimum_detectable_effect(0.5, 400) == pytest.approx((1.959964 + 0.841621) * 0.5 / 20, rel=1e-5)
    # seeds that repeat the answers (ρ = 1) add nothing; independent seeds (ρ = 0) count as more questions
    assert minimum_detectable_effect(0.5, 400, 4, seed_correlation=1.0) == minimum_detectable_effect(0.5, 400)
    assert minimum_detectable_effect(0.5, 400, 4, seed_correlation=0.0) == pytest.approx(
        minimum_detectable_effect(0.5, 1600)
    )
    assert math.isnan(minimum_detectable_effect(0.5, 0))


def test_a_design_detects_its_mde_about_80_percent_of_the_time():
    """The study's own MDE is what it claims to be: 120 simulated studies whose true delta equals the MDE of the
    design (120 questions × 2 independent seeds, paired sd and seed correlation from a large pilot of the same
    generator) see a significant delta about 80% of the time."""
    rng = np.random.default_rng(11)
    ref, lvl = null_probs(rng, 4000, spread=0.15)
    pilot = synthetic({("gen1", "easy-vqa"): ref, ("gen3", "easy-vqa"): lvl}, seeds=(0, 1), rng=rng)
    sd, rho = variance_components(pair_levels(pilot, "llm", "gen3", "gen1").frame)
    mde = minimum_detectable_effect(sd, 120, 2, seed_correlation=rho)
    assert 0.08 < mde < 0.2
    hits, r = 0, 120
    for _ in range(r):
        ref, lvl = null_probs(rng, 120, spread=0.15, delta=mde)
        study = synthetic({("gen1", "easy-vqa"): ref, ("gen3", "easy-vqa"): lvl}, seeds=(0, 1), rng=rng)
        hits += compare(pair_levels(study, "llm", "gen3", "gen1")).pooled.above(0)
    assert 0.65 < hits / r < 0.93  # 0.80 ± 3 binomial standard errors


def test_an_estimate_carries_its_own_mde():
    rng = np.random.default_rng(12)
    ref, lvl = null_probs(rng, 300)
    study = synthetic({("gen1", "easy-vqa"): ref, ("gen3", "easy-vqa"): lvl}, seeds=(0,), rng=rng)
    e = compare(pair_levels(study, "llm", "gen3", "gen1")).pooled
    sd = float(pair_levels(study, "llm", "gen3", "gen1").frame["diff"].std(ddof=1))
    # the bootstrap standard error of a mean of 300 independent questions is sd/√300 (within Monte Carlo error)
    assert e.mde() == pytest.approx(minimum_detectable_effect(sd, 300), rel=0.1)


def test_pilot_variance_and_the_planned_design(tmp_path):
    rng = np.random.default_rng(13)
    probs = {}
    for task in ("easy-vqa", "shapes-reasoning"):
        probs[("gen1", task)], probs[("gen3", task)] = null_probs(rng, 200)
    pilot = write_finished(synthetic(probs, seeds=(0, 1), identical=True, rng=rng), tmp_path / "pilot")
    table = pilot_variance(pilot).set_index("task")
    assert list(table.index) == ["easy-vqa", "shapes-reasoning"] and (table["questions"] == 200).all()
    assert table["seed_correlation"].tolist() == pytest.approx([1.0, 1.0])  # the seeds repeat every answer
    plan = planned_power(table.reset_index(), {"easy-vqa": 800, "shapes-reasoning": None, "gqa": 500}, 3, margin=0.02)
    rows = plan.set_index("task")
    # 4x the questions halves the MDE; seeds that repeat answers add nothing
    sd = table.loc["easy-vqa", "paired_sd"]
    assert rows.loc["easy-vqa", "mde"] == pytest.approx(minimum_detectable_effect(sd, 800))
    assert rows.loc["shapes-reasoning", "questions"] == 200  # not planned: the pilot's count
    assert "task not in pilot" in rows.loc["gqa", "variance_from"]
    assert rows.loc["all tasks (pooled)", "mde"] < rows["mde"].iloc[:3].min()
    assert rows.loc["easy-vqa", "ni_needs"] == pytest.approx(-0.02 + rows.loc["easy-vqa", "mde"])


def test_study_check_prints_the_planned_mde_from_a_pilot(tmp_path, tiny_raw, capsys):
    import yaml

    from vlmlab.cli import main

    rng = np.random.default_rng(14)
    ref, lvl = null_probs(rng, 100)
    pilot = synthetic({("gen1", "easy-vqa"): ref, ("gen3", "easy-vqa"): lvl}, seeds=(0,), rng=rng)
    write_finished(pilot, tmp_path / "pilot")
    spec = {
        "name": "t",
        "base": tiny_raw,
        "factors": {"llm": {"keys": ["model.llm.id"], "levels": {"a": {"model.llm.id": "llama1-tiny"}}}},
        "seeds": [0, 1],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["study", str(path), "--check", "--pilot", str(tmp_path / "pilot"), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().err  # the console writes to stderr
    assert "What this design could detect" in out and "easy-vqa" in out
    sd = float(pair_levels(pilot, "llm", "gen3", "gen1").frame["diff"].std(ddof=1))
    assert f"±{minimum_detectable_effect(sd, 24):.3f}" in out  # the tiny base evaluates 24 easy-vqa questions
    assert main(["study", str(path), "--pilot", str(tmp_path / "pilot")]) == 2  # --pilot needs --check
    assert main(["study", str(path), "--check", "--pilot", str(tmp_path / "none")]) == 1  # not a study: one line
