"""`fastv`: at layer K, rank image tokens by the attention they receive; drop the lowest R for good."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from vlmlab.errors import ConfigError
from vlmlab.models.routing.base import RoutingStrategy
from vlmlab.models.routing.cost import Geometry, layer_flops
from vlmlab.models.routing.driver import LayerRunner, gather_tokens
from vlmlab.registry import PartParams, register_routing


@dataclass
class _Pruned:
    """What decoding needs after a pruned prefill: the kept tokens' key mask and the prefill length."""

    kept_mask: torch.Tensor  # (B, T') of the kept prefill positions
    prefill_len: int


@register_routing("fastv")
class FastV(RoutingStrategy):
    """FastV (Chen et al. 2024): layers [0, K) see every token; from layer K on, only the kept ones.

    Ranking: layer K's own query/key projections give the attention of the last prompt token over all
    keys (mean over heads), or with `rank_by: all-tokens` the mean over every prompt token's causal
    attention; the `ratio` of image tokens with the least attention are removed from the
    hidden states, positions, mask and KV cache of layers [K, L) — compute really shrinks. Dropped
    positions keep their layer-K input state in the returned tensor (no loss or decoding reads them).
    """

    class Params(PartParams):
        layer: int = Field(2, ge=1)  # K
        ratio: float = Field(0.5, ge=0, lt=1)  # R: share of image tokens dropped
        # whose attention ranks the image tokens: the last prompt token's (FastV's released code), or the mean
        # over every prompt token's causal attention (the paper's "attention received from all tokens")
        rank_by: Literal["last-token", "all-tokens"] = "last-token"

    paper_params = {"layer": 2, "ratio": 0.5}  # FastV's K=2, R=50% on LLaVA-1.5

    @classmethod
    def prefill_flops(cls, params, g: Geometry) -> float:
        """Layers [0, K) over every token, the ranking at K (query rows of the ranking tokens, every key),
        then layers [K, L) over the tokens kept."""
        n = g.tokens
        kept = n - int(params.ratio * g.vision)
        d = g.hidden
        queries = (
            n if params.rank_by == "all-tokens" else 1
        )  # q projections, all k, scores of those queries over n keys
        ranking = (
            2.0 * (queries * d * d + n * d * d * g.kv_heads // g.heads + queries * n * d) if params.ratio > 0 else 0.0
        )
        return params.layer * layer_flops(g, n, n) + ranking + (g.layers - params.layer) * layer_flops(g, kept, kept)

    def __init__(self, llm, params):
        super().__init__(llm, params)
        if params.layer >= llm.num_layers:
            raise ConfigError("model.routing.layer", f"{params.layer} but the LLM has {llm.num_layers} layers")

    def forward(
        self, llm, inputs_embeds, attention_mask, position_ids, image_mask, past_key_values=None, use_cache=False
    ):
        run = LayerRunner(llm)
        k, n = self.params.layer, run.num_layers
        state = getattr(past_key_values, "_vlmlab_fastv", None) if past_key_values is not None else None
        if state is not None:  # decoding: new tokens after a pruned prefill
            hidden = run.run(inputs_embeds, position_ids, attention_mask, range(0, k), past_key_values, use_cache)
            pruned_mask = torch.cat([state.kept_mask, attention_mask[:, state.prefill_len :]], dim=1)
            hidden = run.run(hidden, position_ids, pruned_mask, range(k, n), past_key_values, use_cache)
            return BaseModelOutputWithPast(last_hidden_state=run.norm(hidden), past_key_values=past_key_values)
        hidden = run.run(inputs_embeds, position_ids, attention_mask, range(0, k), past_key_values, use_cache)
        keep = self.kept_positions(run, hidden, position_ids, attention_mask, image_mask)
        kept_mask = gather_tokens(attention_mask, keep)
        kept = run.run(
            gather_tokens(hidden, keep),
            gather_tokens(position_ids, keep),
            kept_mask,
            range(k, n),
            past_key_values,
            use_cache,
        )
        out = hidden.scatter(1, keep[..., None].expand(-1, -1, hidden.shape[-1]), kept)
        if use_cache and past_key_values is not None:
            past_key_values._vlmlab_fastv = _Pruned(kept_mask, attention_mask.shape[1])
        return BaseModelOutputWithPast(last_hidden_state=run.norm(out), past_key_values=past_key_values)

    @torch.no_grad()
    def kept_positions(self, run: LayerRunner, hidden, position_ids, attention_mask, image_mask) -> torch.Tensor:
        """(B, T') sorted indices: every non-image position plus the image tokens the last token attends to most."""
        b, t = image_mask.shape
        n_image = image_mask.sum(dim=1)
        if self.params.ratio == 0 or int(n_image.max()) == 0:
            return torch.arange(t, device=hidden.device).expand(b, t)
        if int(n_image.min()) != int(n_image.max()):
            raise ValueError("fastv: every row needs the same number of image tokens")
        layer = run.layers[self.params.layer]
        attn = layer.self_attn
        x = layer.input_layernorm(hidden)
        head_dim = attn.head_dim
        queries = slice(None) if self.params.rank_by == "all-tokens" else slice(-1, None)
        q = attn.q_proj(x[:, queries])
        q = q.view(b, q.shape[1], -1, head_dim).transpose(1, 2)  # (B, H, Q, hd)
        key = attn.k_proj(x).view(b, t, -1, head_dim).transpose(1, 2)
        cos, sin = run.rope(hidden, position_ids)
        q, _ = apply_rotary_pos_emb(q, q, cos[:, queries], sin[:, queries])
        _, key = apply_rotary_pos_emb(key, key, cos, sin)
        key = key.repeat_interleave(q.shape[1] // key.shape[1], dim=1)
        scores = (q @ key.transpose(-1, -2)) * attn.scaling  # (B, H, Q, T)
        real = attention_mask.bool()
        allowed = real[:, None, None, :].expand(-1, 1, q.shape[2], -1)
        if self.params.rank_by == "all-tokens":  # causal: query i sees keys <= i
            allowed = allowed & torch.ones(t, t, dtype=torch.bool, device=q.device).tril()[None, None]
        probs = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1).nan_to_num(0.0)
        per_query = probs.mean(dim=1)  # (B, Q, T): mean over heads
        if self.params.rank_by == "all-tokens":  # mean over the real query positions (padding rows excluded)
            weights = real[:, queries].float()
            received = (per_query * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)
        else:
            received = per_query[:, 0]  # (B, T)
        n_keep = int(n_image[0]) - int(self.params.ratio * int(n_image[0]))
        ranked = received.masked_fill(~image_mask, float("-inf")).topk(n_keep, dim=1).indices
        keep = ~image_mask
        keep = keep.scatter(1, ranked, True)
        return keep.nonzero()[:, 1].view(b, -1)
