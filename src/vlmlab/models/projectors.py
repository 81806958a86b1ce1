"""Projectors from vision features (d_v) to the LLM's embedding width (D), Prismatic's ids."""

from __future__ import annotations

import torch
from torch import nn

from vlmlab.registry import PartParams, register_projector


class Projector(nn.Module):
    """Maps (B, N, vision_dim) to (B, N, llm_dim). `norm: true` adds a LayerNorm on the input."""

    class Params(PartParams):
        norm: bool = False

    def __init__(self, vision_dim: int, llm_dim: int, params: PartParams):
        super().__init__()
        self.vision_dim = vision_dim
        self.llm_dim = llm_dim
        self.norm = nn.LayerNorm(vision_dim) if params.norm else nn.Identity()
        self.net = self.layers(vision_dim, llm_dim)

    @classmethod
    def build(cls, params: PartParams, *, vision_dim: int, llm_dim: int) -> Projector:
        """The projector for `params` between the built vision encoder's and LLM's widths."""
        return cls(vision_dim, llm_dim, params)

    def layers(self, vision_dim: int, llm_dim: int) -> nn.Module:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(features))


@register_projector("linear")
class LinearProjector(Projector):
    """Linear(d_v -> D)."""

    def layers(self, vision_dim: int, llm_dim: int) -> nn.Module:
        return nn.Linear(vision_dim, llm_dim)


@register_projector("gelu-mlp")
class GeluMLPProjector(Projector):
    """Linear(d_v -> D) -> GELU -> Linear(D -> D), LLaVA-1.5's connector."""

    def layers(self, vision_dim: int, llm_dim: int) -> nn.Module:
        return nn.Sequential(nn.Linear(vision_dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim))


@register_projector("fused-gelu-mlp")
class FusedGeluMLPProjector(Projector):
    """Linear(d -> 4d) -> GELU -> Linear(4d -> D) -> GELU -> Linear(D -> D) (study B's stabilizer)."""

    def layers(self, vision_dim: int, llm_dim: int) -> nn.Module:
        wide = 4 * vision_dim
        return nn.Sequential(
            nn.Linear(vision_dim, wide), nn.GELU(), nn.Linear(wide, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim)
        )
