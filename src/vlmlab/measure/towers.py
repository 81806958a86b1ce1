"""Matched vision pretraining of a study's towers, run (or read from the cache) exactly as the study's runs will."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from vlmlab.config import VISION_PRETRAIN, RunConfig, own_seed, stage_seed
from vlmlab.data.sources import load_training_sources
from vlmlab.errors import UserError
from vlmlab.registry import VISION_ENCODERS
from vlmlab.train import vision_cache
from vlmlab.train.vision_pretrain import run_vision_stage


def pretrain_towers(runs: Iterable[tuple[str, int, RunConfig]], study_cache: Path, bar) -> list[dict[str, Any]]:
    """The vision-pretrain stage of every distinct tower × seed among `runs` (variant name, seed, config): same
    initialisation, recipe, data and cache as the runs, which then load the result. One row per tower and seed."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows, done = [], set()
    for name, seed, cfg in runs:
        stages = [i for i, st in enumerate(cfg.train.stages) if st.kind is VISION_PRETRAIN]
        if not stages:
            raise UserError(f"{name}: the runs have no vision-pretrain stage (train.stages)", exit_code=2)
        s = stages[0]
        ident = (vision_cache.stage_key(cfg, s), own_seed(cfg, s))
        if ident in done:
            continue
        done.add(ident)
        # as build_model (the tower is the first part built under the run's seed), or the stage's own seed
        torch.manual_seed(own_seed(cfg, s))
        tower = VISION_ENCODERS.get(cfg.model.vision.id).build(cfg.model.vision.params, image_size=cfg.data.image.size)
        torch.manual_seed(stage_seed(own_seed(cfg, s), s))  # as the trainer at the start of a stage
        metrics = run_vision_stage(
            cfg,
            s,
            tower.to(device),
            None,
            lambda cfg=cfg: load_training_sources(cfg),
            device,
            bar,
            study_cache=study_cache,
        )
        parameters = sum(p.numel() for p in tower.parameters())
        rows.append({"variant": name, "seed": seed, "tower": cfg.model.vision.id, "parameters": parameters, **metrics})
    return rows
