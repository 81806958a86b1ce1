"""How vision tokens flow through the LLM decoder: the interface every routing strategy implements."""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPast

from vlmlab.models.llm.base import LanguageBackbone


class RoutingStrategy(nn.Module):
    """Runs the (unmodified) decoder of `llm` over spliced embeddings and returns its final states.

    `image_mask` (B, T) marks vision-token positions. The LLM is passed in, not owned, so a strategy's
    own parameters (e.g. a side branch) are the only ones it registers; they form the `routing` group.
    """

    def __init__(self, llm: LanguageBackbone, params):
        super().__init__()
        self.params = params

    @classmethod
    def build(cls, params, *, llm: LanguageBackbone) -> RoutingStrategy:
        """The strategy for `params` over the built LLM (whose layers it drives, and may copy)."""
        return cls(llm, params)

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
