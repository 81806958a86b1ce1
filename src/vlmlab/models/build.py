"""Build a VLM from a resolved config: each part is looked up by id in its registry."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from vlmlab.config import RunConfig
from vlmlab.errors import UserError
from vlmlab.models.llm.box_tokens import add_box_tokens
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
    part = "model.vision"
    try:
        vision = VISION_ENCODERS.get(m.vision.id).build(m.vision.params, image_size=cfg.data.image.size)
        part = "model.llm"
        llm = LLM_BACKBONES.get(m.llm.id).build(
            m.llm.params, tokenizer_dir=tokenizer_dir, texts=texts, pretrained_weights=pretrained_weights
        )
        part = "model.projector"
        projector = PROJECTORS.get(m.projector.id).build(
            m.projector.params, vision_dim=vision.embed_dim, llm_dim=llm.embed_dim
        )
        part = "model.routing"
        routing = ROUTING.get(m.routing.id).build(m.routing.params, llm=llm)
        if m.box_tokens:  # after every part, so the other parts' initialization does not depend on it
            add_box_tokens(llm)
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise UserError(
            f"{part}: not enough memory to build this part ({_first_line(exc)}); check its size fields"
        ) from None
    except RuntimeError as exc:
        if "allocate" not in str(exc):
            raise
        raise UserError(
            f"{part}: not enough memory to build this part ({_first_line(exc)}); check its size fields"
        ) from None
    return VisionLanguageModel(vision, projector, llm, routing)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else exc.__class__.__name__


def enable_gradient_checkpointing(model: VisionLanguageModel) -> list[str]:
    """Turn on transformers' activation checkpointing in every part that supports it; returns their groups."""
    enabled = []
    for group, module in (("llm", model.llm.lm), ("vision", getattr(model.vision, "tower", None))):
        if module is not None and getattr(module, "supports_gradient_checkpointing", False):
            if hasattr(module, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name goes in v6
                module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            enabled.append(group)
    return enabled
