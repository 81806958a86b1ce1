"""Analytic prefill cost of a decoder: its shape and a prompt's token counts, and FLOPs per layer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Geometry:
    """A decoder's shape and one prompt's token counts (LLaVA-1.5-7B: 32 layers, 4096 wide, 11008 MLP, 576 + ~60)."""

    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    vision: int
    text: int

    @property
    def tokens(self) -> int:
        return self.vision + self.text

    @classmethod
    def of(cls, llm, vision: int, text: int) -> Geometry:
        c = llm.lm.config
        return cls(
            c.num_hidden_layers,
            c.hidden_size,
            c.intermediate_size,
            c.num_attention_heads,
            c.num_key_value_heads,
            vision,
            text,
        )


# LLaVA-1.5-7B's decoder with its 576 vision tokens and ~60 text tokens: the shape the routing papers report at
PAPER = Geometry(layers=32, hidden=4096, ffn=11008, heads=32, kv_heads=32, vision=576, text=60)


def layer_flops(g: Geometry, queries: int, keys: int) -> float:
    """One decoder layer for `queries` tokens attending over `keys`: 2 FLOPs per multiply-add.

    Projections: q, o (d×d), k, v (d×d·kv/heads), MLP 3 × d×ffn; attention: QKᵀ and AV, each
    queries × keys × d (no causal discount: the kernels compute the full block, as FlopCounterMode counts).
    """
    d = g.hidden
    proj = 2 * d * d + 2 * d * d * g.kv_heads // g.heads + 3 * d * g.ffn
    return 2.0 * queries * proj + 2.0 * 2 * queries * keys * d
