"""Per-module learning rates (0 = frozen) and the AdamW groups of a VLM stage (the schedule is `training_step`'s)."""

from __future__ import annotations

import torch

from vlmlab.config import MODULE_GROUPS, StageConfig, TrainConfig
from vlmlab.models.vlm import VisionLanguageModel


def group_parameters(model: VisionLanguageModel, lora: bool) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    """Named parameters of each module group. With LoRA on, the `llm` group is its adapters only."""
    groups: dict[str, list[tuple[str, torch.nn.Parameter]]] = {}
    for group in MODULE_GROUPS:
        params = list(getattr(model, group).named_parameters())
        if group == "llm" and lora:
            params = [(n, p) for n, p in params if "lora_" in n]
        groups[group] = params
    return groups


def apply_stage_freezing(model: VisionLanguageModel, stage: StageConfig) -> dict[str, int]:
    """Set requires_grad from the stage's learning rates; returns trainable parameter counts per group."""
    for p in model.parameters():
        p.requires_grad_(False)
    counts = {}
    for group, params in group_parameters(model, lora=stage.lora is not None).items():
        train = stage.lr[group] > 0
        for _, p in params:
            p.requires_grad_(train)
        counts[group] = sum(p.numel() for _, p in params) if train else 0
    return counts


def build_optimizer(model: VisionLanguageModel, stage: StageConfig, train: TrainConfig) -> torch.optim.AdamW:
    """AdamW with one group per (module, decay/no-decay); biases and norms get no weight decay."""
    param_groups = []
    for group, params in group_parameters(model, lora=stage.lora is not None).items():
        lr = stage.lr[group]
        if lr <= 0:
            continue
        decay = [p for n, p in params if p.ndim >= 2 and "norm" not in n]
        no_decay = [p for n, p in params if not (p.ndim >= 2 and "norm" not in n)]
        for plist, wd, kind in ((decay, train.weight_decay, "decay"), (no_decay, 0.0, "no_decay")):
            if plist:
                param_groups.append(
                    {
                        "params": plist,
                        "lr": lr,
                        "initial_lr": lr,
                        "weight_decay": wd,
                        "name": f"{group}/{kind}",  # by kind, not by value: with weight_decay 0 both stay apart
                    }
                )
    if not param_groups:
        raise ValueError(f"stage {stage.name!r} trains nothing: every learning rate is 0")
    return torch.optim.AdamW(param_groups, betas=train.betas)
