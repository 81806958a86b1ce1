"""Share a vision-pretrain stage between runs that would compute the same tower (a study's LLM variants)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vlmlab.checkpoint import damage, write_manifest
from vlmlab.config import RunConfig, own_seed
from vlmlab.io import atomic_dir, content_hash, read_json

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
    """Load the cached tower into `vision` and return the stage's metrics, or None on a miss. An entry whose files
    do not match its manifest (or that has none) is a miss: the stage is trained again and the entry replaced."""
    entry = cache_dir / key
    if not (entry / METRICS).is_file() or damage(entry, state_file=None) is not None:
        return None
    metrics = read_json(entry / METRICS)
    vision.load_state_dict(load_file(str(entry / WEIGHTS)))
    return {**(metrics if isinstance(metrics, dict) else {}), "cached": True}


def store(cache_dir: Path, key: str, vision: torch.nn.Module, metrics: dict[str, Any]) -> None:
    """Write an entry (weights, metrics, manifest) into a temp dir, then rename it (a crash leaves no half entry);
    an entry another job stored meanwhile is kept when it verifies."""
    entry = cache_dir / key
    if (entry / METRICS).is_file() and damage(entry, state_file=None) is None:
        return
    with atomic_dir(entry) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in vision.state_dict().items()}, str(tmp / WEIGHTS))
        (tmp / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
        write_manifest(tmp)
