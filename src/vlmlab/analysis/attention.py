"""Attention by depth: per LLM layer, the share of text→image attention mass, and the saturation layer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from vlmlab.analysis.base import Analysis
from vlmlab.models.vlm import position_ids_from_mask
from vlmlab.registry import PartParams, register_analysis
from vlmlab.report.document import Section
from vlmlab.study.data import StudyData

RECORD = "attention.json"


@contextmanager
def eager_attention(lm) -> Iterator[None]:
    """Eager attention (which can return its weights) for the duration of a probe only."""
    config = lm.config
    previous = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = previous


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


def saturation_layer(share: list[float], threshold: float) -> int | None:
    """The first layer (0-based) from which the share stays below `threshold` to the last layer; None if never."""
    for layer in range(len(share)):
        if all(s < threshold for s in share[layer:]):
            return layer
    return None


def attention_profile(run_dir: str | Path, n_probe: int = 256, threshold: float = 0.1, batch_size: int = 16) -> dict:
    """Per layer: mean text→image share over heads, text positions and probe items, its spread over heads,
    and the saturation layer. Stored as `attention.json` in the run dir."""
    from vlmlab.data.probe import probe_dataset
    from vlmlab.io import write_json
    from vlmlab.progress import progress
    from vlmlab.runs import load_run_model

    model, cfg = load_run_model(run_dir)
    data = probe_dataset(model, cfg, n_probe)
    chunks = []
    with progress() as bar:
        job = bar.add_task("attention profile", total=len(data), info="")
        for start in range(0, len(data), batch_size):
            idx = range(start, min(start + batch_size, len(data)))
            chunks.append(image_attention_shares(model, data.collate([data[i] for i in idx])))
            bar.advance(job, len(idx))
    shares = torch.cat(chunks, dim=1)  # (layers, items, heads)
    share = shares.mean(dim=(1, 2)).tolist()
    head_means = shares.mean(dim=1)  # (layers, heads)
    record = {
        "run": str(run_dir),
        "items": len(data),
        "threshold": threshold,
        "image_tokens": model.num_image_tokens,
        "share": share,
        "head_std": head_means.std(dim=1, unbiased=False).tolist(),
        "head_min": head_means.min(dim=1).values.tolist(),
        "head_max": head_means.max(dim=1).values.tolist(),
        "saturation_layer": saturation_layer(share, threshold),
    }
    write_json(Path(run_dir) / RECORD, record)
    return record


def profile_figure(profiles: dict[str, dict]):
    import matplotlib.pyplot as plt

    from vlmlab.report.plots import colours

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    cmap = colours(list(profiles))
    for name, p in profiles.items():
        layers = np.arange(len(p["share"]))
        ax.plot(layers, p["share"], marker="o", ms=3, color=cmap[name], label=name)
        ax.fill_between(layers, p["head_min"], p["head_max"], color=cmap[name], alpha=0.12)
        if p["saturation_layer"] is not None:
            ax.axvline(p["saturation_layer"], color=cmap[name], ls=":", lw=1)
    threshold = next(iter(profiles.values()))["threshold"]
    ax.axhline(threshold, color="#888", ls="--", lw=0.8)
    ax.set_xlabel("LLM layer")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_ylabel("text → image attention share")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


@register_analysis("attention-profile")
class AttentionProfile(Analysis):
    """At which layer each variant stops looking at the image: text→image attention share by depth."""

    class Params(PartParams):
        n_probe: int = Field(256, ge=1)
        threshold: float = Field(0.1, gt=0, lt=1)

    title = "Attention to the image by depth"

    def run(self, study: StudyData) -> Section:
        p, section = self.params, Section(self.title)
        seed = study.seeds[0]
        profiles = {v: attention_profile(study.run_dir(v, seed), p.n_probe, p.threshold) for v in study.variants}
        section.text(
            f"Per LLM layer, the attention mass that text tokens after the image (question and template) put on the "
            f"vision tokens, averaged over heads, those positions and {p.n_probe} probe items (eager attention, probe "
            f"only; seed {seed}). Band: the range over heads. Dotted: the saturation layer, the first layer from which "
            f"the share stays below {p.threshold} (dashed) — where routing (DPVR) could send the vision tokens aside."
        )
        section.figure(profile_figure(profiles), "Text→image attention share per layer.", "attention_profile")
        rows = [
            {"variant": v, "layer": i, "share": s, "head_std": p_["head_std"][i]}
            for v, p_ in profiles.items()
            for i, s in enumerate(p_["share"])
        ]
        table = pd.DataFrame(rows)
        section.table(
            table.pivot(index="layer", columns="variant", values="share").reset_index(), "Share per layer and variant."
        )
        for v, p_ in profiles.items():
            sat = p_["saturation_layer"]
            section.text(
                f"**{v}**: share {p_['share'][0]:.3f} at layer 0 → {p_['share'][-1]:.3f} at the last layer; "
                + (f"saturation at layer {sat}." if sat is not None else f"never below {p.threshold}.")
            )
        return section
