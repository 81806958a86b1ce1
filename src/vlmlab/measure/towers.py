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
    """The leading vision-pretrain stages of every distinct tower × seed among `runs` (variant name, seed, config):
    same initialisation, recipe, data and cache as the runs, which then load the result. One row per tower and seed
    (the last of those stages' metrics; `stages`: how many ran in turn, e.g. classify then dense)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows, done = [], set()
    for name, seed, cfg in runs:
        stages = [i for i, st in enumerate(cfg.train.stages) if st.kind is VISION_PRETRAIN]
        if not stages:
            raise UserError(f"{name}: the runs have no vision-pretrain stage (train.stages)", exit_code=2)
        s = stages[0]
        leading = [i for i in range(s, len(cfg.train.stages)) if cfg.train.stages[i].kind is VISION_PRETRAIN]
        leading = [i for j, i in enumerate(leading) if i == s + j]  # consecutive from the first
        ident = (vision_cache.stage_key(cfg, leading[-1]), own_seed(cfg, leading[-1]))
        if ident in done:
            continue
        done.add(ident)
        # as build_model (the tower is the first part built under the run's seed), or the stage's own seed
        torch.manual_seed(own_seed(cfg, s))
        tower = VISION_ENCODERS.get(cfg.model.vision.id).build(cfg.model.vision.params, image_size=cfg.data.image.size)
        seconds = 0.0
        for i in leading:
            torch.manual_seed(stage_seed(own_seed(cfg, i), i))  # as the trainer at the start of a stage
            metrics = run_vision_stage(
                cfg,
                i,
                tower.to(device),
                None,
                lambda cfg=cfg: load_training_sources(cfg),
                device,
                bar,
                study_cache=study_cache,
            )
            seconds += 0.0 if metrics.get("cached") else metrics.get("seconds", 0.0)
        metrics = {**metrics, "stages": len(leading), "seconds": seconds}
        parameters = sum(p.numel() for p in tower.parameters())
        rows.append({"variant": name, "seed": seed, "tower": cfg.model.vision.id, "parameters": parameters, **metrics})
    return rows
