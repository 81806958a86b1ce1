"""Vision pretraining sees the same image order wherever the datasets are stored."""

from __future__ import annotations

import os
import shutil

from vlmlab.config import config_from_dict
from vlmlab.data.shapes_world import generate
from vlmlab.data.sources import load_training_sources
from vlmlab.train.trainer import Trainer
from vlmlab.train.vision_pretrain import label_table, ordered_image_labels


def _order(tiny_raw, tmp_path, first, second):
    """Relative image paths in the order vision pretraining uses, for a two-source mixture."""
    raw = {
        **tiny_raw,
        "data": {
            **tiny_raw["data"],
            "train": [{"task": "shapes-world", "path": str(first)}, {"task": "shapes-world", "path": str(second)}],
        },
    }
    cfg = config_from_dict(raw)
    trainer = Trainer(cfg, tmp_path / "run", resume=False)
    trainer.sources = load_training_sources(cfg)
    paths, _, _ = label_table(ordered_image_labels(trainer.sources))  # what pretrain_vision iterates over
    rel = [os.path.relpath(p, tmp_path).split(os.sep, 1) for p in paths]
    return [(top, inside) for top, inside in rel]


def test_order_is_by_source_then_relative_path_not_by_absolute_location(tmp_path, tiny_raw):
    seed0, seed1 = tmp_path / "gen-s0", tmp_path / "gen-s1"
    generate(seed0, 0, 30, 32)
    generate(seed1, 1, 30, 32)
    # the same two datasets under names that sort the other way round
    for name, src in (("a-first", seed0), ("z-second", seed1), ("z-first", seed0), ("a-second", seed1)):
        shutil.copytree(src, tmp_path / name / "data")
    one = _order(tiny_raw, tmp_path, tmp_path / "a-first" / "data", tmp_path / "z-second" / "data")
    two = _order(tiny_raw, tmp_path, tmp_path / "z-first" / "data", tmp_path / "a-second" / "data")
    seed_of = {"a-first": 0, "z-second": 1, "z-first": 0, "a-second": 1}
    as_seeds = lambda order: [(seed_of[top], inside) for top, inside in order]  # noqa: E731
    assert as_seeds(one) == as_seeds(two)
    assert as_seeds(one)[0][0] == 0 and as_seeds(one)[-1][0] == 1  # the first source's images come first
