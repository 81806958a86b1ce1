"""Power: the plan's minimum detectable effect checked by simulation and against a verdict's own MDE, and
`study --check --pilot`."""

from __future__ import annotations

import numpy as np
import pytest

from _studies import null_probs, synthetic, write_finished
from vlmlab.analysis.inference import detectable_multiple
from vlmlab.analysis.paired import compare, pair_levels
from vlmlab.plan.pilot import paired_noise
from vlmlab.plan.power import minimum_detectable_effect


def _noise(study):
    frame = pair_levels(study, "llm", "gen3", "gen1").frame
    return paired_noise(frame.pivot_table(index="item_id", columns="seed", values="diff"))


def test_the_plan_and_the_verdicts_share_one_detectable_multiple():
    assert detectable_multiple() == pytest.approx(1.959964 + 0.841621, rel=1e-6)
    assert minimum_detectable_effect(0.5, 400) == pytest.approx(detectable_multiple() * 0.5 / 20)


def test_a_design_detects_its_mde_about_80_percent_of_the_time():
    """The plan's MDE is what it claims to be: 120 simulated studies whose true delta equals the MDE of the design
    (120 questions × 2 independent seeds, noise estimated from a large pilot of the same generator) see a
    significant delta in the verdicts' paired bootstrap about 80% of the time."""
    rng = np.random.default_rng(11)
    ref, lvl = null_probs(rng, 4000, spread=0.15)
    noise = _noise(synthetic({("gen1", "easy-vqa"): ref, ("gen3", "easy-vqa"): lvl}, seeds=(0, 1), rng=rng))
    mde = minimum_detectable_effect(noise.sd_paired, 120, 2, seed_share=noise.seed_share, sd_seed=noise.sd_seed)
    assert 0.08 < mde < 0.2
    hits, r = 0, 120
    for _ in range(r):
        ref, lvl = null_probs(rng, 120, spread=0.15, delta=mde)
        study = synthetic({("gen1", "easy-vqa"): ref, ("gen3", "easy-vqa"): lvl}, seeds=(0, 1), rng=rng)
        hits += compare(pair_levels(study, "llm", "gen3", "gen1")).pooled.above(0)
    assert 0.65 < hits / r < 0.93  # 0.80 ± 3 binomial standard errors


def test_an_estimate_carries_the_plans_mde():
    rng = np.random.default_rng(12)
    ref, lvl = null_probs(rng, 300)
    study = synthetic({("gen1", "easy-vqa"): ref, ("gen3", "easy-vqa"): lvl}, seeds=(0,), rng=rng)
    e = compare(pair_levels(study, "llm", "gen3", "gen1")).pooled
    # the bootstrap standard error of a mean of 300 independent questions is sd/√300 (within Monte Carlo error)
    assert e.mde() == pytest.approx(minimum_detectable_effect(_noise(study).sd_paired, 300), rel=0.1)


def test_seeds_that_repeat_the_answers_add_nothing(tmp_path):
    rng = np.random.default_rng(13)
    ref, lvl = null_probs(rng, 200)
    noise = _noise(synthetic({("gen1", "easy-vqa"): ref, ("gen3", "easy-vqa"): lvl}, identical=True, rng=rng))
    assert noise.seeds == 3 and noise.seed_share == pytest.approx(0.0) and noise.sd_seed == pytest.approx(0.0)
    args = dict(seed_share=noise.seed_share, sd_seed=noise.sd_seed)
    assert minimum_detectable_effect(noise.sd_paired, 200, 5, **args) == pytest.approx(
        minimum_detectable_effect(noise.sd_paired, 200, 1, **args)
    )


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
    argv = ["study", str(path), "--check", "--pilot", str(tmp_path / "pilot"), "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().err.split())  # the console writes to stderr; rich wraps table cells
    assert "pilot noise per comparison" in out and "easy-vqa" in out
    noise = _noise(pilot)
    # the tiny base evaluates 24 easy-vqa questions; one pilot seed: seeds computed as adding nothing
    assert f"{minimum_detectable_effect(noise.sd_paired, 24):.3f}" in out
    assert main(["study", str(path), "--pilot", str(tmp_path / "pilot")]) == 2  # --pilot needs --check or --plan
    assert main(["study", str(path), "--check", "--pilot", str(tmp_path / "none")]) == 1  # not a study: one line
    assert main([*argv, "--effect", "2"]) == 2
