"""The `dense` vision-pretrain objective: token labels, labels that move with the pixels, and boxes it learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmlab.config import ImageConfig, config_from_dict
from vlmlab.data.shapes_world import generate, render, sample_objects
from vlmlab.train.dense_pretrain import DenseTargets, object_attributes, rasterize
from vlmlab.train.vision_pretrain import _augment


def scene(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, dict]:
    objects = sample_objects(rng, size)
    pixels = render(objects, size)
    return pixels, {"size": (size, size), "objects": [{k: o[k] for k in ("box", "color", "shape")} for o in objects]}


def test_every_object_owns_a_token_and_background_tokens_touch_no_object():
    rng = np.random.default_rng(0)
    image = ImageConfig(size=64)
    for grid in ((8, 8), (4, 4)):  # a ViT at patch 8, VMamba's coarser stage
        for _ in range(50):
            _, sc = scene(rng)
            owner, boxes = rasterize(sc, grid, image)
            assert set(np.unique(owner[owner >= 0])) == set(range(len(sc["objects"])))
            for r, c in zip(*np.nonzero(owner < 0)):  # a background patch holds no object's centre
                for x1, y1, x2, y2 in boxes:
                    cx, cy = (x1 + x2) / 2 * grid[1], (y1 + y2) / 2 * grid[0]
                    assert not (c <= cx < c + 1 and r <= cy < r + 1)


def test_labels_move_with_the_pixels():
    """Flipped and turned images get exactly the labels of the scene drawn flipped and turned."""
    rng = np.random.default_rng(1)
    image = ImageConfig(size=64)
    pixels, scenes = zip(*(scene(rng) for _ in range(16)))
    paths = [f"img{i}" for i in range(16)]
    objects = dict(zip(paths, scenes))
    classes = object_attributes(objects)
    targets = DenseTargets(paths, objects, (8, 8), image, classes)
    moved, flips, turns = _augment(np.stack(pixels), ["hflip", "rot90"], np.random.default_rng(2))
    attrs, boxes, owner = targets.batch(np.arange(16), flips, turns)
    assert flips.any() and (turns > 0).any()
    for i in range(16):
        sc = {"size": (64, 64), "objects": [dict(o) for o in scenes[i]["objects"]]}
        for o in sc["objects"]:  # move the pixel boxes as the pixels moved
            x1, y1, x2, y2 = o["box"]
            if flips[i]:
                x1, x2 = 64 - x2, 64 - x1
            for _ in range(int(turns[i])):
                x1, y1, x2, y2 = y1, 64 - x2, y2, 64 - x1
            o["box"] = [x1, y1, x2, y2]
        # the moved boxes bound the moved pixels' non-background area
        fg = np.nonzero((moved[i] != render([], 64)[0, 0]).any(-1))
        assert min(o["box"][0] for o in sc["objects"]) == fg[1].min()
        redrawn = DenseTargets(["x"], {"x": sc}, (8, 8), image, classes)
        assert np.array_equal(owner[i] >= 0, redrawn.owner[0] >= 0)
        assert torch.equal(attrs[i], torch.from_numpy(redrawn.attrs[0]))
        assert np.allclose(boxes[i].numpy(), redrawn.boxes[0], equal_nan=True)


def test_the_dense_objective_learns_where_objects_are(tmp_path, monkeypatch):
    """On a small shapes-world set (240 scenes, 600 steps, ~8 s), held-out boxes read off the tokens overlap the true
    ones: mean IoU >= 0.45 (0.57 when written; an untrained head scores ~0.04)."""
    from vlmlab.progress import progress
    from vlmlab.registry import VISION_ENCODERS
    from vlmlab.train.vision_pretrain import run_vision_stage

    monkeypatch.setenv("VLMLAB_CACHE", str(tmp_path / "cache"))
    generate(tmp_path / "sw", seed=3, n=300, size=64)
    cfg = config_from_dict(
        {
            "name": "dense",
            "model": {
                "vision": {"id": "vit", "family": "vit", "patch_size": 8, "hidden_size": 32, "num_layers": 2},
                "projector": {"id": "gelu-mlp"},
                "llm": {"id": "llama2-tiny", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "init": "random"},
            },
            "data": {"train": {"task": "easy-vqa", "limit": 4}, "image": {"size": 64}},
            "train": {
                "stages": [
                    {
                        "name": "vision-pretrain",
                        "objective": "dense",
                        "max_steps": 600,
                        "batch_size": 32,
                        "lr": {"vision": 2e-3},
                        "augment": ["hflip"],
                        "data": {"task": "shapes-world", "split": "train", "path": str(tmp_path / "sw")},
                    }
                ]
            },
        }
    )
    torch.manual_seed(0)
    tower = VISION_ENCODERS.get("vit").build(cfg.model.vision.params, image_size=64)
    with progress(disable=True) as bar:
        metrics = run_vision_stage(cfg, 0, tower, None, list, torch.device("cpu"), bar)
    assert metrics["heldout_images"] == 30
    assert metrics["heldout_box_iou"] >= 0.45, metrics
    assert metrics["heldout_top1/color"] >= 0.8, metrics


def test_objective_is_a_vision_pretrain_setting_and_part_of_the_cached_tower(tiny_raw):
    from vlmlab.errors import ConfigError
    from vlmlab.train.vision_cache import stage_key

    tiny_raw["train"]["stages"] = [
        {"name": "vision-pretrain", "max_steps": 2, "lr": {"vision": 1e-3}},
        {"name": "finetune", "max_steps": 2, "lr": {"llm": 1e-3}},
    ]
    classify = config_from_dict(tiny_raw)
    tiny_raw["train"]["stages"][0]["objective"] = "dense"
    assert stage_key(config_from_dict(tiny_raw), 0) != stage_key(classify, 0)
    tiny_raw["train"]["stages"][1]["objective"] = "dense"
    with pytest.raises(ConfigError, match="objective"):
        config_from_dict(tiny_raw)


@pytest.mark.parametrize(
    "vision",
    [
        {"id": "vim", "patch_size": 8, "hidden_size": 32, "num_layers": 1, "d_state": 4},
        {"id": "vmamba", "patch_size": 8, "hidden_size": 16, "depths": [1, 1], "tap_stage": 2, "d_state": 4},
    ],
    ids=["vim", "vmamba-stage2"],
)
def test_the_dense_objective_trains_the_ssm_towers_on_their_own_grid(tmp_path, monkeypatch, vision):
    from vlmlab.progress import progress
    from vlmlab.registry import VISION_ENCODERS
    from vlmlab.train.vision_pretrain import run_vision_stage

    monkeypatch.setenv("VLMLAB_CACHE", str(tmp_path / "cache"))
    generate(tmp_path / "sw", seed=3, n=40, size=64)
    stage = {"name": "vision-pretrain", "objective": "dense", "max_steps": 2, "batch_size": 8, "lr": {"vision": 1e-3}}
    stage.update(
        augment=["hflip", "rot90"], data={"task": "shapes-world", "split": "train", "path": str(tmp_path / "sw")}
    )
    cfg = config_from_dict(
        {
            "name": "dense-ssm",
            "model": {
                "vision": vision,
                "projector": {"id": "gelu-mlp"},
                "llm": {"id": "llama2-tiny", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "init": "random"},
            },
            "data": {"train": {"task": "easy-vqa", "limit": 4}, "image": {"size": 64}},
            "train": {"stages": [stage]},
        }
    )
    tower = VISION_ENCODERS.get(vision["id"]).build(cfg.model.vision.params, image_size=64)
    assert tower.grid == ((8, 8) if vision["id"] == "vim" else (4, 4))
    with progress(disable=True) as bar:
        metrics = run_vision_stage(cfg, 0, tower, None, list, torch.device("cpu"), bar)
    assert {"heldout_box_iou", "heldout_top1/color", "heldout_top1/shape"} <= set(metrics)
    assert 0.0 <= metrics["heldout_box_iou"] <= 1.0
