"""Training and evaluation FLOPs per sample from a variant's own shapes (2 FLOPs per multiply-add).

- Vision tower: its forward is counted by `torch.utils.flop_counter` on the meta device (every matrix product
  and convolution of the part's own modules, at the configured image size).
- LLM decoder: the routing strategy's own analytic prefill cost (`RoutingStrategy.prefill_flops`, which is
  how FastV and DPVR change it), at the data's mean text length, with and without the vision tokens.
- Projector and LM head: 2 x weights x tokens (the head only at the supervised tokens, as the trainer runs it).

Backward costs twice the forward where weights train (input and weight gradients), once where a frozen part
only passes gradients back to a trained one before it, nothing where nothing before it trains; activation
checkpointing adds one more forward of the checkpointed part. A frozen tower runs forward only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode

from vlmlab.config import RunConfig
from vlmlab.models.routing.cost import Geometry
from vlmlab.plan.data import StageData
from vlmlab.plan.shapes import ShapeModel

GROUPS = ("vision", "projector", "llm", "routing")


@dataclass
class SampleFlops:
    """FLOPs of one training sample (or one evaluated question), by component."""

    parts: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, flops: float) -> None:
        if flops > 0:
            self.parts[name] = self.parts.get(name, 0.0) + flops

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def tower_forward_flops(sm: ShapeModel) -> float:
    """FLOPs of one image through the vision tower, counted on the meta device."""
    vision = sm.model.vision
    size = vision.image_size
    with torch.device("meta"), torch.no_grad(), FlopCounterMode(display=False) as counter:
        vision(torch.empty(1, 3, size, size, device="meta"))
    return float(counter.get_total_flops())


def _linear_weights(module: torch.nn.Module) -> int:
    """Weights of the module's linear layers (what a token multiplies by; embeddings are lookups)."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


def llm_forward_flops(sm: ShapeModel, vision_tokens: int, text_tokens: float) -> float:
    """The routed decoder's forward over one sequence (the routing strategy's own formula)."""
    model = sm.model
    g = Geometry.of(model.llm, vision=vision_tokens, text=max(1, round(text_tokens)))
    return float(type(model.routing).prefill_flops(model.routing.params, g))


def training_sample_flops(sm: ShapeModel, cfg: RunConfig, s: int, data: StageData, tower: float) -> SampleFlops:
    """FLOPs of one training sample of stage `s` (`tower`: the tower's forward FLOPs per image)."""
    stage, model = cfg.train.stages[s], sm.model
    trains = {g: stage.lr.get(g, 0) > 0 for g in GROUPS}
    llm_full = trains["llm"] and stage.lora is None
    recompute = cfg.train.gradient_checkpointing
    out = SampleFlops()
    if not stage.kind.on_sequences:  # vision pretraining: the tower (and its small heads) on one image
        out.add("vision forward", tower)
        out.add("vision backward", 2 * tower)
        return out
    image = 1.0 - data.text_only
    v = model.num_image_tokens
    out.add("vision forward", image * tower)
    if trains["vision"]:
        tower_ckpt = recompute and getattr(
            getattr(model.vision, "tower", None), "supports_gradient_checkpointing", False
        )
        out.add("vision backward", image * (2 + tower_ckpt) * tower)
    proj = 2.0 * _linear_weights(model.projector) * v * image
    out.add("projector forward", proj)
    out.add("projector backward", proj * (trains["projector"] + trains["vision"]))
    llm = image * llm_forward_flops(sm, v, data.mean_text_tokens) + (1 - image) * llm_forward_flops(
        sm, 0, data.mean_text_tokens
    )
    out.add("LLM forward", llm)
    anything = any(trains.values())
    if anything:
        out.add("LLM backward", llm * (2 if llm_full else 1))
        if recompute:
            out.add("LLM recompute", llm)
    head = 2.0 * model.llm.embed_dim * model.llm.lm.config.vocab_size * data.mean_answer_tokens
    out.add("LM head forward", head)
    if anything:
        out.add("LM head backward", head * (2 if llm_full else 1))
    return out


def eval_item_flops(sm: ShapeModel, cfg: RunConfig, tower: float, prompt_text_tokens: float) -> SampleFlops:
    """FLOPs of one evaluated question: the tower, the projector, the prompt's prefill and the decode steps
    (each new token through the decoder's weights and over the cached keys)."""
    model = sm.model
    v = model.num_image_tokens
    out = SampleFlops()
    out.add("vision forward", tower)
    out.add("projector forward", 2.0 * _linear_weights(model.projector) * v)
    out.add("LLM prefill", llm_forward_flops(sm, v, prompt_text_tokens))
    decoder = _linear_weights(model.llm.decoder) + _linear_weights(model.llm.lm_head)
    per_token = 2.0 * decoder + 4.0 * model.llm.embed_dim * model.llm.num_layers * (v + prompt_text_tokens)
    out.add("decode", cfg.eval.max_new_tokens * per_token)
    return out
