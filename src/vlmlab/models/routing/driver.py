"""Drive an unmodified HF decoder layer by layer: rotary embeddings, masks and KV cache for token subsets.

Routing strategies that change *which* tokens a layer sees (FastV drops image tokens, DPVR sends them to a
side branch) run the library's own decoder layers through this runner instead of copying modeling code.
"""

from __future__ import annotations

import torch
from torch import nn


def attention_mask_4d(key_valid: torch.Tensor, q_len: int, dtype: torch.dtype, implementation: str) -> torch.Tensor:
    """(B, 1, q, kv) mask for the last `q_len` of `kv` positions: causal by index, padding keys excluded.

    Every query may always see itself, so a padding row is never fully masked (no NaN from sdpa); real rows
    are unchanged by that. sdpa takes a boolean mask (True = attend), eager an additive float one.
    """
    kv = key_valid.shape[1]
    device = key_valid.device
    q_pos = torch.arange(kv - q_len, kv, device=device)[:, None]
    k_pos = torch.arange(kv, device=device)[None, :]
    allowed = (k_pos <= q_pos)[None, None] & key_valid.bool()[:, None, None, :]
    allowed = allowed | (k_pos == q_pos)[None, None]
    if implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)


class LayerRunner:
    """Runs ranges of `llm`'s decoder layers over any subset of tokens (hidden states + their positions)."""

    def __init__(self, llm):
        self.decoder: nn.Module = llm.decoder
        self.layers = list(self.decoder.layers)
        self.implementation = llm.lm.config._attn_implementation

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def rope(self, hidden: torch.Tensor, position_ids: torch.Tensor):
        return self.decoder.rotary_emb(hidden, position_ids=position_ids)

    def run(self, hidden, position_ids, key_valid, layers: range, cache=None, use_cache: bool = False) -> torch.Tensor:
        """Layers `layers` over `hidden` (B, q, D). `key_valid` (B, kv) covers the cached keys and these q."""
        return self.apply([self.layers[i] for i in layers], hidden, position_ids, key_valid, cache, use_cache)

    def apply(self, modules, hidden, position_ids, key_valid, cache=None, use_cache: bool = False) -> torch.Tensor:
        """Any decoder-layer modules (the LLM's own, or a routing strategy's copy) in order over `hidden`."""
        if len(modules) == 0:
            return hidden
        embeddings = self.rope(hidden, position_ids)
        mask = attention_mask_4d(key_valid, hidden.shape[1], hidden.dtype, self.implementation)
        for layer in modules:
            hidden = layer(
                hidden,
                attention_mask=mask,
                position_ids=position_ids,
                past_key_values=cache if use_cache else None,
                use_cache=use_cache,
                position_embeddings=embeddings,
            )
        return hidden

    def norm(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder.norm(hidden)


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of `x` (B, T, ...) at `index` (B, T') per batch row."""
    if x.dim() == 2:
        return x.gather(1, index)
    return x.gather(1, index[..., None].expand(-1, -1, *x.shape[2:]))
