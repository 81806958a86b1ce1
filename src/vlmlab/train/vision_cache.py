"""Share a vision-pretrain stage between runs that would compute the same tower (a study's LLM variants)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vlmlab.config import RunConfig, own_seed
from vlmlab.io import content_hash

WEIGHTS = "vision.safetensors"
METRICS = "metrics.json"


def stage_key(cfg: RunConfig, stage_index: int) -> str | None:
    """Hash of everything the tower after this stage depends on, or None when earlier stages could change it."""
    if any(st.kind.on_sequences for st in cfg.train.stages[:stage_index]):
        return None
    r = cfg.resolved()
    seeds = [own_seed(cfg, s) for s in range(stage_index + 1)]
    train = {
        k: v
        for k, v in r["train"].items()
        if k not in ("stages", "log_every", "checkpoint_every", "threads", "trackers", "on_nonfinite")
    }
    own_data = cfg.train.stages[stage_index].data is not None  # then the run's training data plays no part
    payload = {
        "vision": r["model"]["vision"],
        "image": {k: v for k, v in r["data"]["image"].items() if k != "position"},  # the prompt layout: not the tower's
        "data": None if own_data else r["data"]["train"],
        "seed": seeds[0] if len(set(seeds)) == 1 else seeds,  # the stages' own, if set: one tower for every run seed
        "stages": r["train"]["stages"][: stage_index + 1],
        "train": train,
        "torch": torch.__version__,
    }
    return content_hash(payload)


def load(cache_dir: Path, key: str, vision: torch.nn.Module) -> dict[str, Any] | None:
    """Load the cached tower into `vision` and return the stage's metrics, or None on a miss."""
    entry = cache_dir / key
    if not (entry / METRICS).is_file():
        return None
    vision.load_state_dict(load_file(str(entry / WEIGHTS)))
    return {**json.loads((entry / METRICS).read_text()), "cached": True}


def store(cache_dir: Path, key: str, vision: torch.nn.Module, metrics: dict[str, Any]) -> None:
    """Write an entry into a temp dir, then rename it (a crash leaves no half entry)."""
    entry = cache_dir / key
    tmp = cache_dir / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in vision.state_dict().items()}, str(tmp / WEIGHTS))
    (tmp / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
    if entry.exists():
        shutil.rmtree(tmp)
        return
    tmp.rename(entry)
