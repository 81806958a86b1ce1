"""`dpvr`: DPVR-LF — vision tokens leave the stack at layer k through a one-layer side branch; re-fused at the last layer."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, field_validator
from transformers.modeling_outputs import BaseModelOutputWithPast

from vlmlab.errors import ConfigError
from vlmlab.models.routing.base import RoutingStrategy, saturation_layer
from vlmlab.models.routing.cost import Geometry, layer_flops
from vlmlab.models.routing.driver import LayerRunner, gather_tokens
from vlmlab.registry import PartParams, register_routing


@dataclass
class _Routed:
    """What decoding needs after a routed prefill: the text positions' key mask and the prefill length."""

    text_mask: torch.Tensor  # (B, T_text) key mask of the prefill's text positions
    prefill_len: int


@register_routing("dpvr")
class DualPathRouting(RoutingStrategy):
    """Dual-Path Vision Token Routing with late fusion, on an unmodified HF decoder ("Late-Layer Fusion is
    Enough: Dual-Path Vision Token Routing for MLLMs under Visual Saturation", arXiv 2606.09131).

    - layers [0, k): every token (the LLM's own layers);
    - at k the vision states go through `branch`, one decoder layer (a copy of LLM layer k, so it starts as
      the layer they would have entered; `branch_init: zero-residual` zeroes its output projections so it
      starts as the identity), attending to vision tokens only;
    - text states alone go through layers [k, L−1) (vision keys removed: compute shrinks);
    - the last layer L−1 runs over [branch vision states ; text states] at their original positions.
    The branch is this strategy's only parameter (the `routing` module group); train it with
    `lr: {routing: ...}` and keep `llm` at 0 to freeze the LLM, as DPVR does.
    """

    class Params(PartParams):
        layer: int | Literal["auto"] = Field(...)  # k, or `auto`: the saturation layer of model.init_from's profile
        threshold: float = Field(0.1, gt=0, lt=1)  # with `auto`: the share below which attention has saturated
        branch_init: Literal["copy", "zero-residual"] = "copy"

        @field_validator("layer")
        @classmethod
        def _at_least_one(cls, value):
            if value != "auto" and value < 1:
                raise ValueError("must be >= 1 (layers [0, k) see the whole sequence), or auto")
            return value

    measured_field = "layer"  # `layer: auto`
    paper_params = {"layer": 18}  # LLaVA-1.5-7B: 18 shared + 13 text-only + 1 fused layer

    @classmethod
    def prefill_flops(cls, params, g: Geometry) -> float:
        """Shared layers [0, k) over every token, the branch over the vision tokens, text-only layers [k, L−1),
        and the fused last layer over every token."""
        k = params.layer
        return (
            k * layer_flops(g, g.tokens, g.tokens)
            + layer_flops(g, g.vision, g.vision)
            + (g.layers - 1 - k) * layer_flops(g, g.text, g.text)
            + layer_flops(g, g.tokens, g.tokens)
        )

    @classmethod
    def attention_threshold(cls, params) -> float | None:
        return params.threshold if params.layer == "auto" else None

    @classmethod
    def with_profile(cls, params, share: list[float], source: str) -> dict:
        """`layer: auto` -> the saturation layer of `share`, kept in [1, L−1] (DPVR needs one shared layer and
        the last layer for fusion)."""
        k = saturation_layer(share, params.threshold)
        if k is None:
            lowest = min(range(len(share)), key=share.__getitem__)
            raise ConfigError(
                "model.routing.layer",
                f"auto: the text→image share of {source} never stays below {params.threshold} (lowest "
                f"{share[lowest]:.3f} at layer {lowest}); set the layer, or raise model.routing.threshold",
            )
        return {**params.model_dump(mode="json"), "layer": min(max(k, 1), len(share) - 1)}

    def __init__(self, llm, params):
        super().__init__(llm, params)
        n = llm.num_layers
        if params.layer == "auto":
            raise ConfigError(
                "model.routing.layer",
                "auto is not resolved: `vlmlab train` and `vlmlab study` read it off model.init_from's measured "
                "attention profile before building the model (vlmlab.measure.resolve.resolve_config)",
            )
        if not 1 <= params.layer <= n - 1:
            raise ConfigError(
                "model.routing.layer", f"{params.layer} must be in [1, {n - 1}] for an LLM with {n} layers"
            )
        self.branch = copy.deepcopy(llm.decoder.layers[params.layer])
        for module in self.branch.modules():  # share the LLM's config: one attention implementation for both
            if hasattr(module, "config"):
                module.config = llm.lm.config
        self.llm_weights_loaded(llm)

    @torch.no_grad()
    def llm_weights_loaded(self, llm) -> None:
        """(Re)initialise the branch from LLM layer k's current weights (zeroed output projections if asked)."""
        self.branch.load_state_dict(llm.decoder.layers[self.params.layer].state_dict())
        if self.params.branch_init == "zero-residual":
            self.branch.self_attn.o_proj.weight.zero_()
            self.branch.mlp.down_proj.weight.zero_()
        for p in self.branch.parameters():
            p.requires_grad_(True)

    def forward(
        self, llm, inputs_embeds, attention_mask, position_ids, image_mask, past_key_values=None, use_cache=False
    ):
        run = LayerRunner(llm)
        k, last = self.params.layer, run.num_layers - 1
        cache = past_key_values
        state = getattr(cache, "_vlmlab_dpvr", None) if cache is not None else None
        if state is not None:  # decoding: new (text) tokens after a routed prefill
            hidden = run.run(inputs_embeds, position_ids, attention_mask, range(0, k), cache, use_cache)
            text_keys = torch.cat([state.text_mask, attention_mask[:, state.prefill_len :]], dim=1)
            hidden = run.run(hidden, position_ids, text_keys, range(k, last), cache, use_cache)
            hidden = run.run(hidden, position_ids, attention_mask, range(last, last + 1), cache, use_cache)
            return BaseModelOutputWithPast(last_hidden_state=run.norm(hidden), past_key_values=cache)
        hidden = run.run(inputs_embeds, position_ids, attention_mask, range(0, k), cache, use_cache)
        text_idx, image_idx = _split_positions(image_mask)
        fused = hidden
        if image_idx.shape[1]:
            vision = gather_tokens(hidden, image_idx)
            vision_pos = gather_tokens(position_ids, image_idx)
            ones = torch.ones(vision.shape[:2], dtype=attention_mask.dtype, device=vision.device)
            vision = run.apply([self.branch], vision, vision_pos, ones)  # no cache: the branch runs once, at prefill
            fused = fused.scatter(1, image_idx[..., None].expand(-1, -1, hidden.shape[-1]), vision)
        text_mask = gather_tokens(attention_mask, text_idx)
        text = run.run(
            gather_tokens(hidden, text_idx),
            gather_tokens(position_ids, text_idx),
            text_mask,
            range(k, last),
            cache,
            use_cache,
        )
        fused = fused.scatter(1, text_idx[..., None].expand(-1, -1, hidden.shape[-1]), text)
        out = run.run(fused, position_ids, attention_mask, range(last, last + 1), cache, use_cache)
        if use_cache and cache is not None:
            cache._vlmlab_dpvr = _Routed(text_mask, attention_mask.shape[1])
        return BaseModelOutputWithPast(last_hidden_state=run.norm(out), past_key_values=cache)


def _split_positions(image_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(text indices, image indices), each (B, n) in position order; every row must have the same image count."""
    b, t = image_mask.shape
    n_image = image_mask.sum(dim=1)
    if int(n_image.min()) != int(n_image.max()):
        raise ValueError("dpvr: every row needs the same number of image tokens")
    order = torch.arange(t, device=image_mask.device).expand(b, t)
    image_idx = order[image_mask].view(b, -1)
    text_idx = order[~image_mask].view(b, -1)
    return text_idx, image_idx
