"""The shipped GPU recipes (examples/recipes/) are valid configs, and each tiny twin has the recipe's layout and
trains end to end on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from _mix import write_tiny_mix
from vlmlab import io
from vlmlab.cli import main
from vlmlab.config import config_from_dict, flatten, resolve_parts
from vlmlab.runs import RunDir

RECIPES = Path(__file__).parents[1] / "examples" / "recipes"
NAMES = ["llava-1.5-7b", "prismatic-single-stage"]
# what makes the recipe the recipe: the twin must hold the same values here (sizes, paths, batch sizes and
# lengths are the twin's own)
LAYOUT = (
    "seed",
    "model.vision.id",
    "model.projector.id",
    "data.image.geometry",
    "data.image.mean",
    "data.image.std",
    "train.weight_decay",
    "train.warmup_ratio",
    "train.schedule",
    "train.max_grad_norm",
    "train.gradient_checkpointing",
    "train.group_by_length",
    "train.grad_accum",
)


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("name", NAMES)
def test_each_recipe_is_a_valid_config_and_its_twin_has_its_layout(name):
    real, twin = _load(RECIPES / f"{name}.yaml"), _load(RECIPES / "tiny" / f"{name}.yaml")
    resolve_parts(config_from_dict(real))  # no model is built: the paths need not exist here
    resolve_parts(config_from_dict(twin))
    a, b = flatten(real), flatten(twin)
    for key in LAYOUT:
        assert a.get(key) == b.get(key), key
    stages = lambda raw: [(st["name"], sorted(st["lr"]), "data" in st) for st in raw["train"]["stages"]]  # noqa: E731
    assert stages(real) == stages(twin)
    for s, (st_real, st_twin) in enumerate(zip(real["train"]["stages"], twin["train"]["stages"])):
        assert st_real.get("epochs") == st_twin.get("epochs"), s
        assert {k: v for k, v in st_real["lr"].items()} == st_twin["lr"], s  # the learning rates themselves
    assert [src["task"] for src in real["data"]["train"]] == [src["task"] for src in twin["data"]["train"]]
    assert real["train"]["max_length"] == 2048 and b["train.max_length"] < 2048  # tiny sequences, same rule


@pytest.mark.parametrize("name", NAMES)
def test_each_tiny_twin_trains_from_the_cli(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "tiny-llava"
    mix = write_tiny_mix(data, n=24)
    mix.rename(data / "llava_v1_5_mix665k.json")
    captions = [
        {
            "id": f"cap-{i}",
            "image": f"coco/{i}.png",
            "conversations": [
                {"from": "human", "value": "<image>\nShare a concise interpretation of the image provided."},
                {"from": "gpt", "value": "a coloured square on white"},
            ],
        }
        for i in range(24)
        if (data / "coco" / f"{i}.png").is_file()
    ]
    (data / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(captions))
    assert main(["train", str(RECIPES / "tiny" / f"{name}.yaml"), "--out", "run"]) == 0
    run = RunDir(tmp_path / "run")
    stages = {r["stage"] for r in io.read_jsonl(run.train_log) if "loss" in r}
    assert stages == {st["name"] for st in _load(RECIPES / "tiny" / f"{name}.yaml")["train"]["stages"]}
    assert run.predictions().is_file()
