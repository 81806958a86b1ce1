"""Build a VLM from a resolved config: each part is looked up by id in its registry."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from vlmlab.config import RunConfig
from vlmlab.models.vlm import VisionLanguageModel
from vlmlab.registry import LLM_BACKBONES, PROJECTORS, ROUTING, VISION_ENCODERS


def build_model(
    cfg: RunConfig, *, tokenizer_dir: str | Path | None = None, texts: Iterable[str] | None = None
) -> VisionLanguageModel:
    """Parts are initialised under `cfg.seed`, so the same config builds the same weights."""
    torch.manual_seed(cfg.seed)
    m = cfg.model
    vision = VISION_ENCODERS.get(m.vision.id).from_params(m.vision.params, image_size=cfg.data.image.size)
    llm = LLM_BACKBONES.get(m.llm.id).build(m.llm.params, tokenizer_dir=tokenizer_dir, texts=texts)
    projector = PROJECTORS.get(m.projector.id)(vision.embed_dim, llm.embed_dim, m.projector.params)
    routing = ROUTING.get(m.routing.id)(llm, m.routing.params)
    return VisionLanguageModel(vision, projector, llm, routing)
