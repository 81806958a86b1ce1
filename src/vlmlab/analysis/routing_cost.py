"""`routing-cost`: accuracy against prefill FLOPs and latency per variant, with the Pareto front."""

from __future__ import annotations

import pandas as pd
from pydantic import Field

from vlmlab.analysis.base import Analysis
from vlmlab.registry import PartParams, register_analysis
from vlmlab.report.document import Section
from vlmlab.study.data import StudyData


def pareto_front(frame: pd.DataFrame, cost: str, value: str) -> pd.Series:
    """True where no other row is at most as costly and strictly better, or cheaper and at least as good."""
    front = []
    for _, r in frame.iterrows():
        dominated = ((frame[cost] <= r[cost]) & (frame[value] > r[value])) | (
            (frame[cost] < r[cost]) & (frame[value] >= r[value])
        )
        front.append(not bool(dominated.any()))
    return pd.Series(front, index=frame.index)


def variant_costs(study: StudyData, n_probe: int) -> pd.DataFrame:
    """Per variant (first seed): prefill GFLOPs per prompt, counted and analytic, and latency of its own routing."""
    from vlmlab.data.probe import probe_batch
    from vlmlab.evaluation.efficiency import measure_prefill
    from vlmlab.runs import load_run_model

    rows = []
    for v in study.variants:
        model, cfg = load_run_model(study.run_dir(v, study.seeds[0]))
        batch = probe_batch(model, cfg, n_probe)
        n = batch.input_ids.shape[0]
        cost = measure_prefill(model, batch, repeats=3, decode_tokens=4)
        rows.append(
            {
                "variant": v,
                "routing": cfg.model.routing.id,
                "prefill_gflops_per_prompt": cost["counted_prefill_gflops"] / n,
                "analytic_gflops_per_prompt": cost["analytic_prefill_gflops"] / n,
                "prefill_s": cost["prefill_s"],
                "decode_token_s": cost["decode_token_s"],
            }
        )
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
        table = costs.merge(acc, left_on="variant", right_index=True).merge(
            per_task, left_on="variant", right_index=True
        )
        base = table["prefill_gflops_per_prompt"].max()
        table["flops_ratio"] = table["prefill_gflops_per_prompt"] / base
        table["pareto"] = pareto_front(table, "prefill_gflops_per_prompt", "accuracy")
        section.text(
            f"Prefill FLOPs of the LLM decoder per prompt, counted by torch on {self.params.n_probe} probe prompts (eager "
            "attention so the attention products are counted) beside the analytic token-layer formula; prefill and "
            "per-token decode latency are medians on this machine. Accuracy: all clean evaluation items. The Pareto "
            "front holds the variants no other variant beats at lower or equal cost."
        )
        section.figure(
            _pareto_figure(table),
            "Accuracy against prefill FLOPs (relative to the most expensive variant); the line joins the Pareto front.",
            "routing_pareto",
        )
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
