"""`attention-profile`: at which layer each variant stops looking at the image (text→image attention by depth)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from vlmlab.analysis.base import Analysis
from vlmlab.measure.attention import AttentionProfile as ProfileMeasurement
from vlmlab.registry import PartParams, register_analysis
from vlmlab.render.document import Section
from vlmlab.render.plots import colours, plt
from vlmlab.study.data import StudyData


def profile_figure(profiles: dict[str, dict[str, Any]], threshold: float):
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    cmap = colours(list(profiles))
    for name, p in profiles.items():
        layers = np.arange(len(p["share"]))
        ax.plot(layers, p["share"], marker="o", ms=3, color=cmap[name], label=name)
        ax.fill_between(layers, p["head_min"], p["head_max"], color=cmap[name], alpha=0.12)
        if p["saturation_layer"] is not None:
            ax.axvline(p["saturation_layer"], color=cmap[name], ls=":", lw=1)
    ax.axhline(threshold, color="#888", ls="--", lw=0.8)
    ax.set_xlabel("LLM layer")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_ylabel("text → image attention share")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


@dataclass
class AttentionResult:
    seed: int
    profiles: dict[str, dict[str, Any]]  # variant -> the measured profile with its saturation layer at `threshold`


@register_analysis("attention-profile")
class AttentionProfile(Analysis):
    """At which layer each variant stops looking at the image: text→image attention share by depth."""

    class Params(PartParams):
        n_probe: int = Field(256, ge=1)
        threshold: float = Field(0.1, gt=0, lt=1)

    title = "Attention to the image by depth"
    Result = AttentionResult

    def measurements(self, study: StudyData) -> list[ProfileMeasurement]:
        """One profile per variant, on its first seed's run."""
        seed = study.seeds[0]
        return [ProfileMeasurement(study.run(v, seed).path, n_probe=self.params.n_probe) for v in study.variants]

    def compute(self, study: StudyData, measured: list[ProfileMeasurement]) -> AttentionResult:
        profiles = {v: m.profile(self.params.threshold) for v, m in zip(study.variants, measured)}
        return AttentionResult(study.seeds[0], profiles)

    def render(self, r: AttentionResult) -> Section:
        p, section = self.params, Section(self.title)
        section.text(
            f"Per LLM layer, the attention mass that text tokens after the image (question and template) put on the "
            f"vision tokens, averaged over heads, those positions and {p.n_probe} probe items (eager attention, probe "
            f"only; seed {r.seed}). Band: the range over heads. Dotted: the saturation layer, the first layer from which "
            f"the share stays below {p.threshold} (dashed) — where routing (DPVR) could send the vision tokens aside."
        )
        section.figure(
            profile_figure(r.profiles, p.threshold), "Text→image attention share per layer.", "attention_profile"
        )
        rows = [
            {"variant": v, "layer": i, "share": s, "head_std": prof["head_std"][i]}
            for v, prof in r.profiles.items()
            for i, s in enumerate(prof["share"])
        ]
        table = pd.DataFrame(rows)
        section.table(
            table.pivot(index="layer", columns="variant", values="share")[list(r.profiles)].reset_index(),
            "Share per layer and variant.",
        )
        for v, prof in r.profiles.items():
            sat = prof["saturation_layer"]
            section.text(
                f"**{v}**: share {prof['share'][0]:.3f} at layer 0 → {prof['share'][-1]:.3f} at the last layer; "
                + (f"saturation at layer {sat}." if sat is not None else f"never below {p.threshold}.")
            )
        return section
