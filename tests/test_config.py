"""Config validation: every mistake is one error naming its dotted key."""

from __future__ import annotations

import pytest

from vlmlab.config import config_from_dict, parse_overrides
from vlmlab.errors import ConfigError


def _error(raw, overrides=None) -> str:
    with pytest.raises(ConfigError) as exc:
        config_from_dict(raw, overrides)
    assert exc.value.exit_code == 2
    return str(exc.value)


def test_valid_config_resolves_part_defaults(tiny_cfg):
    resolved = tiny_cfg.resolved()
    assert resolved["model"]["vision"]["feature_layer"] == -1
    assert resolved["model"]["routing"] == {"id": "full"}
    assert resolved["train"]["stages"][0]["lr"] == {"vision": 0.0, "projector": 1e-3, "llm": 0.0, "routing": 0.0}


def test_unknown_backbone_names_key_and_known_ids(tiny_raw):
    tiny_raw["model"]["llm"]["id"] = "lama3"
    assert _error(tiny_raw) == (
        "model.llm.id: unknown backbone 'lama3' (known: llama1-tiny, llama2-tiny, llama3-tiny, hf)"
    )


def test_unknown_top_level_key(tiny_raw):
    tiny_raw["trian"] = {}
    assert _error(tiny_raw) == "trian: unknown key"


def test_unknown_part_field(tiny_raw):
    tiny_raw["model"]["vision"]["hiden_size"] = 64
    assert _error(tiny_raw) == "model.vision.hiden_size: unknown key"


def test_wrong_type_names_value(tiny_raw):
    tiny_raw["train"]["batch_size"] = "many"
    msg = _error(tiny_raw)
    assert msg.startswith("train.batch_size: ") and "'many'" in msg


def test_bad_value_in_list(tiny_raw):
    tiny_raw["train"]["stages"][1]["lr"]["decoder"] = 1e-4
    assert _error(tiny_raw).startswith("train.stages.1.lr: unknown module group 'decoder'")


def test_missing_section(tiny_raw):
    del tiny_raw["model"]["llm"]
    assert _error(tiny_raw) == "model.llm: missing required key"


def test_unknown_task(tiny_raw):
    tiny_raw["data"]["eval"][0]["task"] = "vqav3"
    assert _error(tiny_raw).startswith("data.eval.0.task: unknown task 'vqav3'")


def test_overrides_reach_lists_and_parse_yaml(tiny_raw):
    cfg = config_from_dict(tiny_raw, parse_overrides(["train.stages.0.max_steps=7", "model.llm.id=llama3-tiny"]))
    assert cfg.train.stages[0].max_steps == 7
    assert cfg.model.llm.id == "llama3-tiny"
    with pytest.raises(ConfigError, match="train.stages.5: no list entry"):
        config_from_dict(tiny_raw, {"train.stages.5.max_steps": 1})


def test_every_builtin_config_validates():
    from importlib import resources
    from pathlib import Path

    from vlmlab.config import load_config

    configs = sorted(Path(str(resources.files("vlmlab") / "configs")).glob("*.yaml"))
    assert {c.stem for c in configs} >= {"easy-vqa-tiny", "shapes-world-tiny"}
    for path in configs:
        assert load_config(path).name == path.stem


def test_repeat_weights_a_training_source_and_never_an_eval_source(tiny_raw):
    from vlmlab.data.sources import load_source, load_training_items

    source = dict(
        tiny_raw["data"]["train"][0] if isinstance(tiny_raw["data"]["train"], list) else tiny_raw["data"]["train"]
    )
    tiny_raw["data"]["train"] = [source, {**source, "repeat": 3}]
    cfg = config_from_dict(tiny_raw)
    _, once = load_source(cfg.data.train[0], "data.train.0", cfg.data.image)
    mixture = load_training_items(cfg)
    assert [it.item_id for it in mixture] == [it.item_id for it in once] * 4  # 1 + 3 copies, in config order
    tiny_raw["data"]["eval"][0]["repeat"] = 2
    assert _error(tiny_raw).startswith("data.eval: source 0 has repeat 2: `repeat` weights training sources only")


def test_a_config_saved_before_a_new_field_existed_resumes_and_compares_equal(tiny_raw):
    """Fields added since a run was saved read as their defaults: no resume refusal, no study retraining."""
    from vlmlab.runs import normalized_config, resume_differences

    cfg = config_from_dict(tiny_raw)
    saved = cfg.resolved()
    for source in saved["data"]["train"]:
        source.pop("repeat")  # as written before `repeat` existed
    saved["data"]["image"].pop("position")
    assert normalized_config(saved) == cfg.resolved()
    assert resume_differences(saved, cfg.resolved()) == ({}, None)
    changed = cfg.resolved()
    changed["seed"] = 5
    assert resume_differences(saved, changed)[1] == "seed"


def test_repeat_on_a_vision_pretrain_stage_set_is_refused(tiny_raw):
    tiny_raw["train"]["stages"].insert(
        0, {"name": "vision-pretrain", "lr": {"vision": 1e-3}, "data": {"task": "easy-vqa", "repeat": 2}}
    )
    assert "a vision-pretrain stage reads each image once per epoch" in _error(tiny_raw)


def test_a_seed_beyond_the_supported_range_is_one_line(tiny_raw):
    tiny_raw["seed"] = 18446688734  # found by the study-spec fuzz: the per-epoch seed overflowed int64 in torch
    assert _error(tiny_raw).startswith("seed: ")
    tiny_raw["seed"] = -1
    assert _error(tiny_raw).startswith("seed: ")
