"""State-space vision encoders: `vim` (bidirectional Mamba over patches) and `vmamba` (hierarchical SS2D stages)."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from vlmlab.errors import ConfigError
from vlmlab.models.activations import Activations, pixels, selective_scan_layers
from vlmlab.models.memory import build_if_it_fits
from vlmlab.models.vision.base import VisionEncoder, VisionFeatures
from vlmlab.models.vision.mamba_blocks import SS2D, MambaMixer
from vlmlab.models.vision.vmamba_official import load_official_vmamba
from vlmlab.registry import PartParams, register_vision_encoder


@register_vision_encoder("vim")
class VimEncoder(VisionEncoder):
    """Vision Mamba (Zhu et al. 2024): patch embedding + position embedding + pre-norm bidirectional Mamba blocks."""

    class Params(PartParams):
        patch_size: int = Field(8, ge=1, le=1024)
        hidden_size: int = Field(128, ge=8, le=16384)
        num_layers: int = Field(4, ge=1, le=256)
        d_state: int = Field(16, ge=1, le=1024)
        expand: int = Field(2, ge=1, le=16)

    def __init__(self, params: VimEncoder.Params, image_size: int):
        super().__init__()
        side = image_size // params.patch_size
        self.image_size, self.embed_dim, self.num_tokens, self.grid = (
            image_size,
            params.hidden_size,
            side * side,
            (side, side),
        )
        self.patch = nn.Conv2d(3, params.hidden_size, params.patch_size, stride=params.patch_size)
        self.pos = nn.Parameter(torch.zeros(1, side * side, params.hidden_size))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.params = params
        self.norms = nn.ModuleList(nn.LayerNorm(params.hidden_size) for _ in range(params.num_layers))
        self.mixers = nn.ModuleList(
            MambaMixer(params.hidden_size, params.d_state, params.expand, bidirectional=True)
            for _ in range(params.num_layers)
        )
        self.final_norm = nn.LayerNorm(params.hidden_size)

    @classmethod
    def build(cls, params, *, image_size: int) -> VimEncoder:
        if image_size % params.patch_size:
            raise ConfigError(
                "model.vision.patch_size", f"{params.patch_size} does not divide data.image.size {image_size}"
            )
        return build_if_it_fits(lambda: cls(params, image_size), "model.vision")

    def activations(self) -> Activations:
        p = self.params
        scan = selective_scan_layers(self.num_tokens, p.expand * p.hidden_size, p.d_state, 2, p.num_layers, 6, True)
        return pixels(self.image_size) + scan

    def forward(self, pixel_values: torch.Tensor) -> VisionFeatures:
        x = self.patch(pixel_values).flatten(2).transpose(1, 2) + self.pos
        for norm, mixer in zip(self.norms, self.mixers):
            x = x + mixer(norm(x))
        return VisionFeatures(tokens=self.final_norm(x), grid=self.grid)


class VSSBlock(nn.Module):
    """VMamba block: x + SS2D(LN(x)), then x + MLP(LN(x)); channels-last (b, h, w, c)."""

    def __init__(self, dim: int, d_state: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.ss2d = nn.LayerNorm(dim), SS2D(dim, d_state)
        hidden = int(dim * mlp_ratio)  # 0: no MLP sub-block (VSSM v0, the official release)
        self.norm2 = nn.LayerNorm(dim) if hidden else None
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)) if hidden else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ss2d(self.norm1(x))
        return x + self.mlp(self.norm2(x)) if self.mlp is not None else x


class PatchMerging(nn.Module):
    """2×2 neighbours concatenated (4c) -> LayerNorm -> Linear to 2c: half the side, twice the width."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduce = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduce(self.norm(x))


@register_vision_encoder("vmamba")
class VMambaEncoder(VisionEncoder):
    """VMamba (Liu et al. 2024): patch stem, stages of VSS blocks with patch merging; tokens from `tap_stage`.

    Stage s (1-based) has width hidden_size·2^(s−1) and side image_size / (patch_size·2^(s−1)); stages after
    the tapped one are not built.
    """

    class Params(PartParams):
        patch_size: int = Field(4, ge=1, le=1024)
        hidden_size: int = Field(32, ge=8, le=16384)  # stage-1 width
        depths: list[Annotated[int, Field(ge=1, le=64)]] = Field(
            default_factory=lambda: [1, 1, 2], min_length=1, max_length=8
        )
        tap_stage: int = Field(3, ge=1)
        d_state: int = Field(8, ge=1, le=1024)
        mlp_ratio: float = Field(2.0, ge=0, le=16)  # 0 = VSSM v0 blocks (no MLP), as in the official release
        path: str | None = None  # an official VMamba release file (.safetensors, or .pth with allow_pickle)
        allow_pickle: bool = False

    def __init__(self, params: VMambaEncoder.Params, image_size: int):
        super().__init__()
        tap = params.tap_stage
        side = image_size // params.patch_size // 2 ** (tap - 1)
        self.image_size, self.grid, self.num_tokens = image_size, (side, side), side * side
        self.embed_dim = params.hidden_size * 2 ** (tap - 1)
        self.params = params
        self.stem = nn.Conv2d(3, params.hidden_size, params.patch_size, stride=params.patch_size)
        self.stem_norm = nn.LayerNorm(params.hidden_size)
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        for s in range(tap):
            dim = params.hidden_size * 2**s
            if s:
                self.merges.append(PatchMerging(dim // 2))
            self.stages.append(
                nn.Sequential(*(VSSBlock(dim, params.d_state, params.mlp_ratio) for _ in range(params.depths[s])))
            )
        self.out_norm = nn.LayerNorm(self.embed_dim)

    @classmethod
    def build(cls, params, *, image_size: int) -> VMambaEncoder:
        if params.tap_stage > len(params.depths):
            raise ConfigError(
                "model.vision.tap_stage", f"{params.tap_stage} but only {len(params.depths)} stages (depths)"
            )
        stride = params.patch_size * 2 ** (params.tap_stage - 1)
        if image_size % stride:
            raise ConfigError(
                "data.image.size", f"{image_size} is not divisible by patch_size x 2^(tap_stage-1) = {stride}"
            )
        tower = build_if_it_fits(lambda: cls(params, image_size), "model.vision")
        if params.path is not None:
            tower.official_load = load_official_vmamba(tower, params.path, params.allow_pickle)
        return tower

    def activations(self) -> Activations:
        p, total = self.params, pixels(self.image_size)
        for s in range(len(self.stages)):  # four scan directions over a map that halves per side each stage
            side = self.image_size // p.patch_size // 2**s
            width = 2 * p.hidden_size * 2**s
            total = total + selective_scan_layers(side * side, width, p.d_state, 4, p.depths[s], 8, False)
        return total

    def stage_maps(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The (b, h, w, c) feature map after every built stage."""
        x = self.stem_norm(self.stem(pixel_values).permute(0, 2, 3, 1))
        maps = []
        for s, stage in enumerate(self.stages):
            if s:
                x = self.merges[s - 1](x)
            x = stage(x)
            maps.append(x)
        return maps

    def forward(self, pixel_values: torch.Tensor) -> VisionFeatures:
        x = self.stage_maps(pixel_values)[-1]
        return VisionFeatures(tokens=self.out_norm(x.flatten(1, 2)), grid=self.grid)
