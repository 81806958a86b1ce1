"""`vision-pretraining`: does the tower's pretraining accuracy predict the VLM's score? (study B's question)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from vlmlab.analysis.base import Analysis
from vlmlab.metrics import accuracy
from vlmlab.registry import register_analysis
from vlmlab.render.document import Section
from vlmlab.render.plots import colours
from vlmlab.study.data import StudyData, run_json


def pretraining_table(study: StudyData) -> pd.DataFrame:
    """Per variant and seed: mean top-1 of the vision-pretrain heads (held-out when the stage has its own set),
    the tower's parameters, and the VLM's clean accuracy overall and per task."""
    clean = study.results[study.results["mode"] == "clean"]
    rows = []
    for variant in study.variants:
        for seed in study.seeds:
            train = run_json(study.run(variant, seed).train_info)
            vp = train.get("vision_pretrain") or {}
            held = [v for k, v in vp.items() if k.startswith("heldout_top1/")]  # images never trained on, if any
            tops = held or [v for k, v in vp.items() if k.startswith("train_top1/")]
            f = clean[(clean["variant"] == variant) & (clean["seed"] == seed)]
            rows.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "pretrain_top1": float(np.mean(tops)) if tops else float("nan"),
                    "top1_on": "held-out" if held else ("train" if tops else ""),
                    "params_vision": (train.get("parameters") or {}).get("vision"),
                    "vlm_accuracy": accuracy(f),
                    **{t: accuracy(g) for t, g in f.groupby("task", sort=False)},
                }
            )
    return pd.DataFrame(rows)


@dataclass
class PretrainingResult:
    variants: list[str]
    first_seed: int
    table: pd.DataFrame  # pretraining_table


@register_analysis("vision-pretraining")
class VisionPretraining(Analysis):
    """Vision-pretraining top-1 against the VLM's accuracy per run, with Spearman's rank correlation."""

    title = "Vision pretraining vs VLM quality"
    Result = PretrainingResult

    def compute(self, study: StudyData, measured) -> PretrainingResult:
        return PretrainingResult(study.variants, study.seeds[0], pretraining_table(study))

    def render(self, r: PretrainingResult) -> Section:
        import matplotlib.pyplot as plt

        section = Section(self.title)
        table = r.table
        if table["pretrain_top1"].isna().all():
            return section.text("No run has a vision-pretrain stage: nothing to compare.")
        section.text(
            "`pretrain_top1`: the mean over the pretraining heads (shape, colour, count, ...) of the top-1 accuracy at "
            "the end of the vision-pretrain stage (the same recipe for every encoder): on the pretraining set's held-out "
            "split when the stage names its own `data` (`top1_on: held-out`), else on its last epoch's training images. "
            "Does a tower that classifies better make a better VLM?"
        )
        fig, ax = plt.subplots(figsize=(5.6, 3.8))
        cmap = colours(r.variants)
        for _, row in table.iterrows():
            label = row["variant"] if row["seed"] == r.first_seed else None
            ax.scatter(row["pretrain_top1"], row["vlm_accuracy"], color=cmap[row["variant"]], s=50, label=label)
        ax.set_xlabel("vision-pretraining top-1 (mean over heads)")
        ax.set_ylabel("VLM accuracy (all tasks, clean)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        section.figure(fig, "One point per run (variant × seed).", "vision_pretraining")
        section.table(table, "Per run.")
        valid = table.dropna(subset=["pretrain_top1", "vlm_accuracy"])
        if len(valid) >= 3:
            rho, p = spearmanr(valid["pretrain_top1"], valid["vlm_accuracy"])
            section.text(
                f"Spearman ρ between pretraining top-1 and VLM accuracy over {len(valid)} runs: {rho:+.2f} (p {p:.3g})."
            )
        return section
