"""Build a VLM from a resolved config: each part is looked up by id in its registry."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from vlmlab.config import RunConfig
from vlmlab.models.vlm import VisionLanguageModel
from vlmlab.registry import LLM_BACKBONES, PROJECTORS, ROUTING, VISION_ENCODERS


def build_model(
    cfg: RunConfig,
    *,
    tokenizer_dir: str | Path | None = None,
    texts: Iterable[str] | None = None,
    pretrained_weights: bool = True,
) -> VisionLanguageModel:
    """Parts are initialised under `cfg.seed`, so the same config builds the same weights.

    `pretrained_weights=False` (with the run's `tokenizer_dir`) builds only the shapes, for a caller that
    loads a full checkpoint next: a pretrained rung is then not rebuilt when its cache is missing.
    """
    torch.manual_seed(cfg.seed)
    m = cfg.model
    vision = VISION_ENCODERS.get(m.vision.id).from_params(m.vision.params, image_size=cfg.data.image.size)
    llm = LLM_BACKBONES.get(m.llm.id).build(
        m.llm.params, tokenizer_dir=tokenizer_dir, texts=texts, pretrained_weights=pretrained_weights
    )
    projector = PROJECTORS.get(m.projector.id)(vision.embed_dim, llm.embed_dim, m.projector.params)
    routing = ROUTING.get(m.routing.id)(llm, m.routing.params)
    return VisionLanguageModel(vision, projector, llm, routing)


def enable_gradient_checkpointing(model: VisionLanguageModel) -> list[str]:
    """Turn on transformers' activation checkpointing in every part that supports it; returns their groups."""
    enabled = []
    for group, module in (("llm", model.llm.lm), ("vision", getattr(model.vision, "tower", None))):
        if module is not None and getattr(module, "supports_gradient_checkpointing", False):
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            enabled.append(group)
    return enabled
