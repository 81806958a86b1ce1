"""The vision-encoder interface: images (B, 3, H, W) -> tokens (B, N, D) plus their grid shape."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vlmlab.models.activations import Activations


@dataclass
class VisionFeatures:
    """Patch tokens and the (rows, cols) grid they were flattened from (row-major)."""

    tokens: torch.Tensor  # (B, N, D)
    grid: tuple[int, int]


class VisionEncoder(nn.Module):
    """Base class: subclasses set `embed_dim`, `num_tokens`, `image_size` and implement `forward` and `build`.

    Hierarchical encoders flatten the chosen stage's feature map into tokens and report its grid.
    """

    embed_dim: int
    num_tokens: int
    image_size: int
    grid: tuple[int, int]  # (rows, cols) of the patch tokens `forward` returns

    def forward(self, pixel_values: torch.Tensor) -> VisionFeatures:  # pragma: no cover - interface
        raise NotImplementedError

    def activations(self) -> Activations | None:
        """Activation elements per image (see `models.activations`), for the memory pre-flight; None when the
        encoder does not say (its activations are then left out of the estimate, which says so)."""
        return None

    @classmethod
    def build(cls, params, *, image_size: int) -> VisionEncoder:  # pragma: no cover - interface
        """The encoder for `params` (its registered fields) at the run's processed image side."""
        raise NotImplementedError
