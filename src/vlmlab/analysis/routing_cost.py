"""`routing-cost`: accuracy against prefill FLOPs and latency per variant, with the Pareto front."""

from __future__ import annotations

import pandas as pd
import torch
from pydantic import Field

from vlmlab.analysis.base import Analysis
from vlmlab.registry import PartParams, register_analysis
from vlmlab.report.document import Section
from vlmlab.study.data import StudyData


def pareto_front(frame: pd.DataFrame, cost: str, value: str) -> pd.Series:
    """True where no other row is at most as costly and strictly better, or cheaper and at least as good."""
    front = []
    for _, r in frame.iterrows():
        dominated = ((frame[cost] <= r[cost]) & (frame[value] > r[value])) | ((frame[cost] < r[cost]) & (frame[value] >= r[value]))
        front.append(not bool(dominated.any()))
    return pd.Series(front, index=frame.index)


def variant_costs(study: StudyData, n_probe: int) -> pd.DataFrame:
    from vlmlab.analysis.representations import probe_items
    from vlmlab.data.dataset import VQADataset
    from vlmlab.evaluation.efficiency import Geometry, analytic_prefill_flops, counted_prefill_flops, latency
    from vlmlab.runs import load_run_model

    rows = []
    seed = study.seeds[0]
    for v in study.variants:
        model, cfg = load_run_model(study.run_dir(v, seed))
        items = probe_items(cfg, n_probe)
        data = VQADataset(items, model.llm, cfg.data.image, model.num_image_tokens, with_answers=False)
        batch = data.collate([data[i] for i in range(len(data))])
        routing = cfg.model.routing
        text = round(float((batch.attention_mask.sum(1) - model.num_image_tokens).float().mean()))
        g = Geometry.of(model.llm, vision=model.num_image_tokens, text=text)
        params = routing.params
        analytic = analytic_prefill_flops(g, routing.id, getattr(params, "layer", None), getattr(params, "ratio", 0.0))
        with torch.no_grad():
            timing = latency(model, batch, decode_tokens=4, repeats=3)
        rows.append({"variant": v, "routing": routing.id, "prefill_gflops_per_prompt": counted_prefill_flops(model, batch) / 1e9 / len(items),
                     "analytic_gflops_per_prompt": analytic / 1e9, **timing})
    return pd.DataFrame(rows)


@register_analysis("routing-cost")
class RoutingCost(Analysis):
    """What each variant's accuracy costs: prefill FLOPs (counted), latency, and the accuracy-vs-FLOPs Pareto front."""

    class Params(PartParams):
        n_probe: int = Field(64, ge=1)  # prompts in the measured batch

    title = "Accuracy against compute"

    def run(self, study: StudyData) -> Section:
        section = Section(self.title)
        costs = variant_costs(study, self.params.n_probe)
        clean = study.results[study.results["mode"] == "clean"]
        acc = clean.groupby("variant", sort=False)["correct"].mean().rename("accuracy")
        per_task = clean.groupby(["variant", "task"], sort=False)["correct"].mean().unstack("task")
        table = costs.merge(acc, left_on="variant", right_index=True).merge(per_task, left_on="variant", right_index=True)
        base = table["prefill_gflops_per_prompt"].max()
        table["flops_ratio"] = table["prefill_gflops_per_prompt"] / base
        table["pareto"] = pareto_front(table, "prefill_gflops_per_prompt", "accuracy")
        section.text(
            f"Prefill FLOPs of the LLM decoder per prompt, counted by torch on {self.params.n_probe} probe prompts (eager "
            "attention so the attention products are counted) beside the analytic token-layer formula; prefill and "
            "per-token decode latency are medians on this machine. Accuracy: all clean evaluation items. The Pareto "
            "front holds the variants no other variant beats at lower or equal cost."
        )
        section.figure(_pareto_figure(table), "Accuracy against prefill FLOPs (relative to the most expensive variant); "
                       "the line joins the Pareto front.", "routing_pareto")
        section.table(table, "Cost and accuracy per variant (first seed).")
        return section


def _pareto_figure(table: pd.DataFrame):
    import matplotlib.pyplot as plt

    from vlmlab.report.plots import colours

    fig, ax = plt.subplots(figsize=(5.8, 3.8))
    cmap = colours(list(table["variant"]))
    for _, r in table.iterrows():
        ax.scatter(r["flops_ratio"], r["accuracy"], s=60, color=cmap[r["variant"]], label=r["variant"], zorder=3)
    front = table[table["pareto"]].sort_values("flops_ratio")
    ax.plot(front["flops_ratio"], front["accuracy"], color="#444", lw=1, ls="--", zorder=2)
    ax.set_xlabel("prefill FLOPs (× most expensive)")
    ax.set_ylabel("accuracy (all tasks, clean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
