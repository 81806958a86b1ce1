"""`full`: every token goes through every layer (the plain model)."""

from __future__ import annotations

from vlmlab.models.routing.base import RoutingStrategy
from vlmlab.models.routing.cost import Geometry, layer_flops
from vlmlab.registry import PartParams, register_routing


@register_routing("full")
class FullRouting(RoutingStrategy):
    """The baseline: the decoder sees the whole sequence at every layer."""

    class Params(PartParams):
        pass

    plain_decoder = True
    paper_params = {}

    @classmethod
    def prefill_flops(cls, params, g: Geometry) -> float:
        return g.layers * layer_flops(g, g.tokens, g.tokens)

    def forward(
        self, llm, inputs_embeds, attention_mask, position_ids, image_mask, past_key_values=None, use_cache=False
    ):
        return llm.decoder(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
        )
