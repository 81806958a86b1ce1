"""Attention by depth: per LLM layer, the share of text→image attention mass on a fixed probe set."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from vlmlab import io
from vlmlab.data.probe import probe_dataset
from vlmlab.measure.base import Measurement
from vlmlab.models.llm.base import eager_attention
from vlmlab.models.routing.base import saturation_layer
from vlmlab.models.vlm import position_ids_from_mask
from vlmlab.registry import PartParams


def text_queries(attention_mask: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
    """Text query positions: real (non-pad), non-image tokens *after* the first image token — the tokens
    that can attend to the image at all (the question and the template up to the answer)."""
    after_image = image_mask.long().cumsum(-1) > 0
    return attention_mask.bool() & ~image_mask & after_image


@torch.no_grad()
def image_attention_shares(model, batch) -> torch.Tensor:
    """(layers, items, heads): mean over text query rows of the attention mass on image key positions."""
    llm = model.llm
    embeds = model.embed(batch.input_ids, batch.image_mask, batch.pixel_values)
    with eager_attention(llm.lm):
        out = llm.decoder(
            inputs_embeds=embeds,
            attention_mask=batch.attention_mask,
            position_ids=position_ids_from_mask(batch.attention_mask),
            output_attentions=True,
        )
    queries = text_queries(batch.attention_mask, batch.image_mask).float()  # (B, T)
    keys = batch.image_mask.float()  # (B, T)
    shares = []
    for attn in out.attentions:  # (B, H, T, T): rows are queries, columns keys
        on_image = (attn.float() * keys[:, None, None, :]).sum(-1)  # (B, H, T)
        per_head = (on_image * queries[:, None, :]).sum(-1) / queries.sum(-1).clamp(min=1)[:, None]
        shares.append(per_head)
    return torch.stack(shares)


class AttentionProfile(Measurement):
    """Per layer: the text→image share averaged over heads, text positions and probe items, and its range
    over heads. The saturation layer depends on a threshold, so it is read off the stored profile
    (`profile(threshold)`), not stored with it."""

    kind = "attention-profile"
    title = "text→image attention profile"
    runtime_fields = ("batch_size",)

    class Params(PartParams):
        n_probe: int = Field(256, ge=1)  # probe items from the run's evaluation tasks, taken in turn
        batch_size: int = Field(16, ge=1)

    def measure(self, model, cfg, bar) -> None:
        data = probe_dataset(model, cfg, self.params.n_probe)
        device = next(model.parameters()).device
        size = self.params.batch_size
        chunks = []
        job = bar.add_task("attention profile", total=len(data), info=str(self.run.path.name))
        for start in range(0, len(data), size):
            idx = range(start, min(start + size, len(data)))
            chunks.append(image_attention_shares(model, data.collate([data[i] for i in idx]).to(device)).cpu())
            bar.advance(job, len(idx))
        shares = torch.cat(chunks, dim=1)  # (layers, items, heads)
        head_means = shares.mean(dim=1)  # (layers, heads)
        io.write_json(
            self.path,
            {
                "run": str(self.run.path),
                "items": len(data),
                "image_tokens": model.num_image_tokens,
                "share": shares.mean(dim=(1, 2)).tolist(),
                "head_std": head_means.std(dim=1, unbiased=False).tolist(),
                "head_min": head_means.min(dim=1).values.tolist(),
                "head_max": head_means.max(dim=1).values.tolist(),
            },
        )

    def profile(self, threshold: float) -> dict[str, Any]:
        """The stored profile with `threshold` and the saturation layer it gives (None: never saturates)."""
        record = self.read()
        return {**record, "threshold": threshold, "saturation_layer": saturation_layer(record["share"], threshold)}
