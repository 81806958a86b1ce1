"""How vision tokens flow through the LLM decoder: the interface every routing strategy implements."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPast

from vlmlab.models.llm.base import LanguageBackbone
from vlmlab.models.routing.cost import Geometry


class RoutingStrategy(nn.Module):
    """Runs the (unmodified) decoder of `llm` over spliced embeddings and returns its final states.

    `image_mask` (B, T) marks vision-token positions. The LLM is passed in, not owned, so a strategy's
    own parameters (e.g. a side branch) are the only ones it registers; they form the `routing` group.

    A strategy also owns what the rest of vlmlab needs to know about it, so adding one is one file:
    its analytic prefill FLOPs (`prefill_flops`), whether its model is the plain LLM (`plain_decoder`, which
    export needs), the setting its paper reports (`paper_params`), and which of its fields are read off a
    measured attention profile (`attention_threshold`, `with_profile`).
    """

    # every token through every layer, as the LLM ships: a checkpoint of the model is the unrouted VLM
    plain_decoder: ClassVar[bool] = False
    # the strategy's setting in its paper, at LLaVA-1.5-7B's shape (`cost.PAPER`); None: no paper setting
    paper_params: ClassVar[dict[str, Any] | None] = None
    # the field `with_profile` fills from a measured attention profile (DPVR's `layer`); None: no such field
    measured_field: ClassVar[str | None] = None

    def __init__(self, llm: LanguageBackbone, params):
        super().__init__()
        self.params = params

    @classmethod
    def build(cls, params, *, llm: LanguageBackbone) -> RoutingStrategy:
        """The strategy for `params` over the built LLM (whose layers it drives, and may copy)."""
        return cls(llm, params)

    @classmethod
    def prefill_flops(cls, params, g: Geometry) -> float:  # pragma: no cover - interface
        """Prefill FLOPs of the decoder layers (no LM head) for one prompt of shape `g` under `params`."""
        raise NotImplementedError

    @classmethod
    def attention_threshold(cls, params) -> float | None:
        """The saturation threshold when some field of `params` is to be read off the attention profile of
        `model.init_from` (DPVR's `layer: auto`); None when every field is given."""
        return None

    @classmethod
    def with_profile(cls, params, share: list[float], source: str) -> dict[str, Any]:  # pragma: no cover
        """`params` as raw fields, the measured ones filled from `share` (text→image attention per layer of the
        run `source`); a profile that cannot give them is a ConfigError naming the field."""
        raise NotImplementedError

    def llm_weights_loaded(self, llm: LanguageBackbone) -> None:
        """Called when the LLM's weights were replaced after construction (`model.init_from`) while this
        strategy's own parameters were not in the checkpoint; strategies derived from LLM weights re-derive."""

    def forward(
        self,
        llm: LanguageBackbone,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        image_mask: torch.Tensor,
        past_key_values=None,
        use_cache: bool = False,
    ) -> BaseModelOutputWithPast:  # pragma: no cover - interface
        raise NotImplementedError


def saturation_layer(share: list[float], threshold: float) -> int | None:
    """The first layer (0-based) from which the text→image share stays below `threshold` to the last; None if never."""
    for layer in range(len(share)):
        if all(s < threshold for s in share[layer:]):
            return layer
    return None
