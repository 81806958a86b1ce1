"""`routing-cost`: accuracy against prefill FLOPs and latency per variant, with the Pareto front."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from pydantic import Field

from vlmlab.analysis.base import Analysis
from vlmlab.measure.cost import PrefillCost
from vlmlab.metrics import accuracy_by
from vlmlab.registry import PartParams, register_analysis
from vlmlab.render.document import Section
from vlmlab.render.plots import colours
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


@dataclass
class RoutingCostResult:
    n_probe: int
    table: pd.DataFrame  # per variant: routing, GFLOPs per prompt (counted, analytic), latency, accuracy, Pareto flag


@register_analysis("routing-cost")
class RoutingCost(Analysis):
    """What each variant's accuracy costs: prefill FLOPs (counted), latency, and the accuracy-vs-FLOPs Pareto front."""

    class Params(PartParams):
        n_probe: int = Field(64, ge=1)  # prompts in the measured batch

    title = "Accuracy against compute"
    Result = RoutingCostResult

    def measurements(self, study: StudyData) -> list[PrefillCost]:
        """Each variant's own routing on its first seed's run (latency is timed once, then read back)."""
        seed = study.seeds[0]
        return [PrefillCost(study.run(v, seed).path, n_probe=self.params.n_probe) for v in study.variants]

    def compute(self, study: StudyData, measured: list[PrefillCost]) -> RoutingCostResult:
        columns = ["routing", "prefill_gflops_per_prompt", "analytic_gflops_per_prompt", "prefill_s", "decode_token_s"]
        costs = pd.DataFrame(
            [{"variant": v, **{c: m.read()[c] for c in columns}} for v, m in zip(study.variants, measured)]
        )
        clean = study.results[study.results["mode"] == "clean"]
        acc = accuracy_by(clean, ["variant"]).rename("accuracy")
        per_task = accuracy_by(clean, ["variant", "task"]).unstack("task")
        table = costs.merge(acc, left_on="variant", right_index=True).merge(
            per_task, left_on="variant", right_index=True
        )
        base = table["prefill_gflops_per_prompt"].max()
        table["flops_ratio"] = table["prefill_gflops_per_prompt"] / base
        table["pareto"] = pareto_front(table, "prefill_gflops_per_prompt", "accuracy")
        return RoutingCostResult(self.params.n_probe, table)

    def render(self, r: RoutingCostResult) -> Section:
        section = Section(self.title)
        section.text(
            f"Prefill FLOPs of the LLM decoder per prompt, counted by torch on {r.n_probe} probe prompts (eager "
            "attention so the attention products are counted) beside the analytic token-layer formula; prefill and "
            "per-token decode latency are medians, timed once on the machine that ran `vlmlab analyze`. Accuracy: "
            "all clean evaluation items. The Pareto front holds the variants no other variant beats at lower or "
            "equal cost."
        )
        section.figure(
            _pareto_figure(r.table),
            "Accuracy against prefill FLOPs (relative to the most expensive variant); the line joins the Pareto front.",
            "routing_pareto",
        )
        section.table(r.table, "Cost and accuracy per variant (first seed).")
        return section


def _pareto_figure(table: pd.DataFrame):
    import matplotlib.pyplot as plt

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
