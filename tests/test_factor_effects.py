"""`factor-effects`: paired level-vs-reference deltas, hand-checked on a synthetic study."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from _analysis import computed_section
from vlmlab.analysis.factor_effects import FactorEffects, level_deltas, verdict
from vlmlab.study.data import StudyData
from vlmlab.study.spec import study_spec_from_dict


def _study(rows):
    spec = study_spec_from_dict(
        {
            "name": "s",
            "base": "easy-vqa-tiny",
            "factors": {
                "llm": {
                    "keys": ["model.llm.id"],
                    "levels": {"gen1": {"model.llm.id": "llama1-tiny"}, "gen3": {"model.llm.id": "llama3-tiny"}},
                },
                "size": {
                    "keys": ["data.image.size"],
                    "levels": {"small": {"data.image.size": 32}, "big": {"data.image.size": 64}},
                },
            },
        }
    )
    frame = pd.DataFrame(rows, columns=["llm", "size", "seed", "task", "item_id", "score"])
    frame["variant"] = frame["llm"] + "-" + frame["size"]
    frame["mode"], frame["category"] = "clean", "all"
    return StudyData(Path("."), spec, {}, frame, pd.DataFrame())


def test_deltas_pair_the_same_items_within_the_other_factors_level():
    rows = []
    ref = [1, 0, 1, 0]
    new = [1, 1, 1, 0]
    for i in range(4):
        rows += [("gen1", "small", 0, "t", f"q{i}", ref[i]), ("gen3", "small", 0, "t", f"q{i}", new[i])]
        # the big-image level of the other factor: gen3 is worse there; pairs never cross levels
        rows += [("gen1", "big", 0, "t", f"q{i}", 1), ("gen3", "big", 0, "t", f"q{i}", 0)]
    table = level_deltas(_study(rows), "llm")
    assert len(table) == 1 and table["n"].iloc[0] == 8  # 4 items x 2 levels of `size`
    assert table["delta"].iloc[0] == pytest.approx((0.75 - 0.5 + 0.0 - 1.0) / 2)
    size = level_deltas(_study(rows), "size")
    assert size["comparison"].iloc[0] == "big − small"


def test_verdict_needs_the_interval_to_exclude_zero():
    assert verdict(0.01, 0.2) == "helps" and verdict(-0.3, -0.01) == "hurts"
    assert verdict(-0.1, 0.1) == "no detectable difference"


def test_section_states_a_verdict_per_task():
    rows = [
        (llm, "small", 0, task, f"q{i}", int(llm == "gen3" or i % 2 == 0))
        for task in ("a", "b")
        for i in range(60)
        for llm in ("gen1", "gen3")
    ]
    rows += [(llm, "big", 0, "a", "q0", 1) for llm in ("gen1", "gen3")]
    section = computed_section(FactorEffects(FactorEffects.Params()), _study(rows))
    from vlmlab.render.document import Figure, Text

    text = " ".join(b.text for b in section.blocks if isinstance(b, Text))
    # n beside every delta: task a has 60 questions at `small` plus q0 again at `big` (the same question, 61 rows)
    assert "**gen3 − gen1**: `a` +0.492 (helps; n 60 q × 1 seed); `b` +0.500 (helps; n 60 q × 1 seed)." in text
    assert sum(isinstance(b, Figure) for b in section.blocks) == 2  # one per factor


def test_per_seed_deltas_split_what_pooling_merges():
    rows = [
        (llm, "small", seed, "t", f"q{i}", int(llm == "gen3" and seed == 1))
        for seed in (0, 1)
        for i in range(4)
        for llm in ("gen1", "gen3")
    ]
    pooled = level_deltas(_study(rows), "llm")
    split = level_deltas(_study(rows), "llm", per_seed=True)
    assert pooled["delta"].tolist() == [0.5] and pooled["n"].tolist() == [8]
    assert split.set_index("seed")["delta"].to_dict() == {0: 0.0, 1: 1.0}


def test_grounding_collapse_flags_random_level_and_unparsable_runs():
    from vlmlab.analysis.collapse import collapse_table
    from vlmlab.metrics import random_box_baseline

    gold = "[10, 10, 60, 60]"
    rows = []
    for i in range(40):
        rows.append(
            {
                "variant": "good",
                "seed": 0,
                "mode": "clean",
                "task": "ground",
                "item_id": f"q{i}",
                "answer": gold,
                "correct": i % 2 == 0,
                "score": float(i % 2 == 0),
                "format_error": False,
            }
        )
        rows.append(
            {
                "variant": "broken",
                "seed": 0,
                "mode": "clean",
                "task": "ground",
                "item_id": f"q{i}",
                "answer": gold,
                "correct": False,
                "score": 0.0,
                "format_error": i % 4 != 0,
            }
        )
    table = collapse_table(pd.DataFrame(rows)).set_index("variant")
    assert table.loc["good", "random_box_acc"] == pytest.approx(random_box_baseline([[10, 10, 60, 60]] * 40))
    assert not table.loc["good", "collapsed"] and table.loc["broken", "collapsed"]
    assert "format errors" in table.loc["broken", "why"] and "random boxes" in table.loc["broken", "why"]


def test_vision_pretraining_table_reads_each_runs_top1(tmp_path):
    import json

    from vlmlab.analysis.vision_pretraining import VisionPretraining, pretraining_table

    rows = []
    for v, top1, acc in (("vit", 0.9, 0.8), ("vim", 0.6, 0.5), ("vmamba", 0.7, 0.6)):
        run = tmp_path / "variants" / v / "seed-0"
        run.mkdir(parents=True)
        (run / "train.json").write_text(
            json.dumps(
                {
                    "vision_pretrain": {"train_top1/shape": top1, "train_top1/color": top1, "seconds": 1.0},
                    "parameters": {"vision": 10},
                }
            )
        )
        rows += [
            {
                "variant": v,
                "seed": 0,
                "mode": "clean",
                "task": "t",
                "item_id": f"q{i}",
                "correct": i < acc * 10,
                "score": float(i < acc * 10),
            }
            for i in range(10)
        ]
    levels = {v: {"data.image.size": 32} for v in ("vit", "vim", "vmamba")}
    spec = study_spec_from_dict(
        {"name": "s", "base": "easy-vqa-tiny", "factors": {"vision": {"keys": ["data.image.size"], "levels": levels}}}
    )
    study = StudyData(tmp_path, spec, {}, pd.DataFrame(rows), pd.DataFrame())
    table = pretraining_table(study).set_index("variant")
    assert table.loc["vim", "pretrain_top1"] == pytest.approx(0.6) and table.loc[
        "vit", "vlm_accuracy"
    ] == pytest.approx(0.8)
    from vlmlab.render.document import Text

    section = computed_section(VisionPretraining(VisionPretraining.Params()), study)
    texts = [b.text for b in section.blocks if isinstance(b, Text)]
    assert any("Spearman ρ" in t and "+1.00" in t for t in texts)
