"""`vlmlab pretrain-vision`: one recipe for every tower on its own labelled set, held-out top-1, cached for the runs."""

from __future__ import annotations

import json

import yaml

from vlmlab.cli import main


def _spec(tmp_path, tiny_raw):
    base = dict(tiny_raw)
    base["train"] = {
        **tiny_raw["train"],
        "stages": [
            {
                "name": "vision-pretrain",
                "max_steps": 6,
                "batch_size": 16,
                "lr": {"vision": 3e-3},
                "augment": ["hflip"],
                "data": {"task": "shapes-world", "split": "train", "path": "${datasets.pretrain}"},
                "heldout_split": "val",
            },
            {"name": "align", "max_steps": 1, "lr": {"projector": 1e-3}},
        ],
    }
    base["data"] = {**tiny_raw["data"], "image": {"size": 32}}
    spec = {
        "name": "pv",
        "base": base,
        "datasets": {"pretrain": {"seed": 3, "n": 60, "size": 32}},
        "eval": {"blind": False},
        "factors": {
            "vision": {
                "keys": ["model.vision"],
                "levels": {
                    "vit": {
                        "model.vision": {
                            "id": "vit",
                            "patch_size": 8,
                            "hidden_size": 32,
                            "num_layers": 1,
                            "num_heads": 2,
                        }
                    },
                    "vmamba": {
                        "model.vision": {
                            "id": "vmamba",
                            "patch_size": 8,
                            "hidden_size": 16,
                            "depths": [1, 1],
                            "tap_stage": 2,
                            "d_state": 4,
                        }
                    },
                },
            }
        },
    }
    path = tmp_path / "pv.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_pretrain_vision_scores_held_out_images_caches_and_the_study_reuses_it(tmp_path, tiny_raw, capsys):
    spec = _spec(tmp_path, tiny_raw)
    out = tmp_path / "study"
    assert main(["pretrain-vision", str(spec), "--out", str(out)]) == 0
    first = capsys.readouterr()
    table = [line.split() for line in (first.out + first.err).splitlines() if line.startswith(("vit ", "vmamba "))]
    assert [row[0] for row in table] == ["vit", "vmamba"]
    for row in table:
        train_top1, heldout_top1 = float(row[-5]), float(row[-4])
        assert 0.0 <= heldout_top1 <= 1.0 and 0.0 <= train_top1 <= 1.0 and row[-1] == "s"  # trained now
        assert row[-3] == "-"  # no box IoU under the classify objective
    assert main(["pretrain-vision", str(spec), "--out", str(out)]) == 0
    again = capsys.readouterr()
    assert sum(line.rstrip().endswith("cached") for line in (again.out + again.err).splitlines()) == 2

    from vlmlab.study.runner import run_study

    run_study(spec, out)  # the study's runs take the towers from the cache: the same recipe, not retrained
    for variant in ("vit", "vmamba"):
        info = json.loads((out / "variants" / variant / "seed-0" / "train.json").read_text())
        assert info["vision_pretrain"]["cached"] is True
        assert any(k.startswith("heldout_top1/") for k in info["vision_pretrain"])


def test_a_vision_pretrain_stage_takes_one_labelled_set(tiny_raw):
    import pytest

    from vlmlab.config import config_from_dict
    from vlmlab.errors import ConfigError

    tiny_raw["train"]["stages"].insert(0, {"name": "vision-pretrain", "lr": {"vision": 1e-3}, "data": []})
    tiny_raw["train"]["stages"][0]["data"] = [{"task": "easy-vqa"}, {"task": "easy-vqa"}]
    with pytest.raises(ConfigError, match="train.stages.0: `data` of a vision-pretrain stage is one labelled image"):
        config_from_dict(tiny_raw)
    tiny_raw["train"]["stages"][0]["data"] = {"task": "easy-vqa"}
    tiny_raw["train"]["stages"][1]["data"] = [{"task": "easy-vqa", "limit": 8}]  # a sequence stage's own mixture
    assert config_from_dict(tiny_raw).train.stages[1].sources[0].limit == 8


def test_an_imagenet_style_folder_pretrains_a_tower_that_generalises(tmp_path, tiny_raw):
    """`image-folder` (<split>/<class>/<image>): the stage learns the classes and scores unseen val images."""
    import numpy as np
    import torch
    from PIL import Image

    from vlmlab.config import config_from_dict
    from vlmlab.progress import progress
    from vlmlab.registry import VISION_ENCODERS
    from vlmlab.train.vision_pretrain import run_vision_stage

    rng = np.random.default_rng(0)
    colours = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}
    for split, n in (("train", 12), ("val", 5)):
        for name, rgb in colours.items():
            (tmp_path / "imgs" / split / name).mkdir(parents=True)
            for i in range(n):  # the class colour plus noise: no two images alike
                pixels = np.clip(np.array(rgb) + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(tmp_path / "imgs" / split / name / f"{i}.png")
    tiny_raw["data"]["image"] = {"size": 32}
    tiny_raw["train"]["stages"] = [
        {
            "name": "vision-pretrain",
            "max_steps": 30,
            "batch_size": 12,
            "lr": {"vision": 3e-3},
            "data": {"task": "image-folder", "split": "train", "path": str(tmp_path / "imgs")},
        }
    ]
    cfg = config_from_dict(tiny_raw)
    torch.manual_seed(0)
    tower = VISION_ENCODERS.get("vit").build(cfg.model.vision.params, image_size=32)
    with progress(disable=True) as bar:
        metrics = run_vision_stage(cfg, 0, tower, None, list, torch.device("cpu"), bar)
    assert metrics["images"] == 36 and metrics["heldout_images"] == 15
    assert metrics["heldout_top1/class"] >= 0.9


def test_image_folder_errors_name_the_directory(tmp_path):
    import pytest

    from vlmlab.errors import DataError
    from vlmlab.registry import TASKS

    task = TASKS.get("image-folder")()
    with pytest.raises(DataError, match=r"train: no such split directory"):
        task.load("train", path=str(tmp_path))
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=r"train: no images in class folders"):
        task.load("train", path=str(tmp_path))


def test_a_vision_pretrain_stage_with_its_own_seed_gives_every_seed_one_tower(tmp_path, tiny_raw, monkeypatch):
    """`train.stages.0.seed`: runs of seeds 0 and 1 pretrain the same tower (and a study computes it once); the run
    whose seed equals the stage's is the run without it; the other parts still follow the run's seed."""
    import pytest
    import torch
    from safetensors.torch import load_file

    from vlmlab.config import config_from_dict
    from vlmlab.errors import ConfigError
    from vlmlab.train import vision_cache
    from vlmlab.train.trainer import Trainer

    monkeypatch.setenv("VLMLAB_CACHE", str(tmp_path / "cache"))
    tiny_raw["train"]["stages"].insert(
        0, {"name": "vision-pretrain", "max_steps": 3, "batch_size": 16, "lr": {"vision": 1e-3}, "seed": 0}
    )

    def weights(seed: int, own: bool = True) -> dict:
        raw = {**tiny_raw, "seed": seed}
        raw["train"] = {**tiny_raw["train"], "stages": [dict(st) for st in tiny_raw["train"]["stages"]]}
        if not own:
            raw["train"]["stages"][0].pop("seed")
        out = tmp_path / f"s{seed}-{own}"
        Trainer(config_from_dict(raw), out).run_training()
        return load_file(str(out / "checkpoints" / "final" / "model.safetensors"))

    s0, s1, plain0 = weights(0), weights(1), weights(0, own=False)
    tower = [k for k in s0 if k.startswith("vision.")]
    assert tower and all(torch.equal(s0[k], s1[k]) for k in tower)  # one tower for both seeds
    assert all(torch.equal(s0[k], plain0[k]) for k in s0)  # seed 0 with stage seed 0 = seed 0 as before
    projector = [k for k in s0 if k.startswith("projector.")]
    assert not all(torch.equal(s0[k], s1[k]) for k in projector)  # the rest follows the run's seed
    keys = {vision_cache.stage_key(config_from_dict({**tiny_raw, "seed": seed}), 0) for seed in (0, 1, 7)}
    assert len(keys) == 1
    chained = {**tiny_raw["train"]["stages"][0], "objective": "dense"}  # classify, then dense: both seeded
    two = {**tiny_raw, "train": {**tiny_raw["train"], "stages": [tiny_raw["train"]["stages"][0], chained]}}
    keys = {vision_cache.stage_key(config_from_dict({**two, "seed": seed}), 1) for seed in (0, 1)}
    assert len(keys) == 1 and keys != {vision_cache.stage_key(config_from_dict(two), 0)}
    assert (
        "seed"
        not in config_from_dict(
            {**tiny_raw, "train": {**tiny_raw["train"], "stages": tiny_raw["train"]["stages"][1:]}}
        ).resolved()["train"]["stages"][0]
    )
    bad = {
        **tiny_raw,
        "train": {**tiny_raw["train"], "stages": [tiny_raw["train"]["stages"][1], tiny_raw["train"]["stages"][0]]},
    }
    with pytest.raises(ConfigError, match="an earlier stage does not"):
        config_from_dict(bad)
    bad["train"]["stages"] = [{**tiny_raw["train"]["stages"][1], "seed": 3}]
    with pytest.raises(ConfigError, match="seed"):
        config_from_dict(bad)
