"""The assembled VLM: vision encoder -> projector -> tokens spliced at `<image>` -> routed LLM."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlmlab.models.llm.base import LanguageBackbone
from vlmlab.models.projectors import Projector
from vlmlab.models.routing.base import RoutingStrategy
from vlmlab.models.vision import features
from vlmlab.models.vision.base import VisionEncoder


@dataclass
class VLMOutput:
    loss: torch.Tensor | None  # mean next-token loss over the batch's supervised tokens
    hidden_states: torch.Tensor  # final-layer states (B, T, D), after the LLM's final norm
    n_targets: int
    loss_sum: torch.Tensor | None = None  # the summed loss: the trainer normalises by the whole step's tokens


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding: the first real token of every row is position 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class VisionLanguageModel(nn.Module):
    """Module groups (for learning rates / freezing): `vision`, `projector`, `llm`, `routing`.

    A frozen tower's tokens are memoized per image (`models.vision.features`; exact, so results do not depend on
    it); `memoize_tower = False` always runs the tower."""

    memoize_tower = True

    def __init__(self, vision: VisionEncoder, projector: Projector, llm: LanguageBackbone, routing: RoutingStrategy):
        super().__init__()
        self.vision = vision
        self.projector = projector
        self.llm = llm
        self.routing = routing

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_tokens

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> projected vision tokens (B, N, D) in the LLM's embedding space."""
        tower_trains = torch.is_grad_enabled() and any(p.requires_grad for p in self.vision.parameters())
        pixels = pixel_values.to(_dtype_of(self.vision))
        with torch.set_grad_enabled(tower_trains):  # a frozen tower keeps no activations for backward
            tokens = None if tower_trains or not self.memoize_tower else features.shared().tokens(self.vision, pixels)
            if tokens is None:
                tokens = self.vision(pixels).tokens
        return self.projector(tokens.to(self.projector_dtype))  # e.g. a bf16 checkpoint tower, fp32 projector

    @property
    def projector_dtype(self) -> torch.dtype:
        return _dtype_of(self.projector)

    def embed(self, input_ids: torch.Tensor, image_mask: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the vision tokens written over the `<image>` placeholder positions.
        `pixel_values` holds one image per row that has vision tokens, in row order (text-only rows have none)."""
        embeds = self.llm.embed_tokens(input_ids.masked_fill(image_mask, 0))
        if pixel_values.shape[0] == 0:  # only text-only rows: the tower does not run
            if int(image_mask.sum()):
                raise ValueError("image placeholder count does not match the vision tokens")
            if torch.is_grad_enabled() and torch.distributed.is_available() and torch.distributed.is_initialized():
                # DDP expects every trainable parameter in each step's graph: tie them in with weight 0
                unused = [p for m in (self.vision, self.projector) for p in m.parameters() if p.requires_grad]
                embeds = embeds + 0.0 * sum(p.sum() for p in unused) if unused else embeds
            return embeds
        vision = self.encode_images(pixel_values).to(embeds.dtype)
        if int(image_mask.sum()) != vision.shape[0] * vision.shape[1]:
            raise ValueError("image placeholder count does not match the vision tokens")
        return embeds.masked_scatter(image_mask.unsqueeze(-1), vision)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> VLMOutput:
        embeds = self.embed(input_ids, image_mask, pixel_values)
        out = self.routing(self.llm, embeds, attention_mask, position_ids_from_mask(attention_mask), image_mask)
        hidden = out.last_hidden_state
        if labels is None:
            return VLMOutput(loss=None, hidden_states=hidden, n_targets=0)
        # Next-token loss on supervised positions only; the LM head runs only where there is a target.
        targets = labels[:, 1:]
        keep = targets != -100
        logits = self.llm.lm_head(hidden[:, :-1][keep]).float()
        loss_sum = F.cross_entropy(logits, targets[keep], reduction="sum")
        n = int(keep.sum())
        return VLMOutput(loss=loss_sum / max(n, 1), hidden_states=hidden, n_targets=n, loss_sum=loss_sum)

    def logits(self, input_ids, attention_mask, image_mask, pixel_values) -> torch.Tensor:
        """Full next-token logits (B, T, V); for tests and analyses, not the training hot path."""
        hidden = self.forward(input_ids, attention_mask, image_mask, pixel_values).hidden_states
        return self.llm.lm_head(hidden).float()


def _dtype_of(module: torch.nn.Module) -> torch.dtype:
    """The dtype of a module's first floating-point parameter (float32 for one without any)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
