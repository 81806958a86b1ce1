"""`grounding-collapse`: flag runs whose box outputs are no better than random boxes, or mostly unparsable."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from pydantic import Field

from vlmlab.analysis.base import Analysis
from vlmlab.metrics import accuracy, parse_box, random_box_baseline
from vlmlab.registry import PartParams, register_analysis
from vlmlab.render import plots
from vlmlab.render.document import Section
from vlmlab.study.data import StudyData


def box_tasks(records: pd.DataFrame) -> list[str]:
    """Tasks whose gold answers are boxes `[x1, y1, x2, y2]`."""
    clean = records[records["mode"] == "clean"]
    return [t for t, f in clean.groupby("task", sort=False) if f["answer"].head(50).map(parse_box).notna().all()]


def collapse_table(records: pd.DataFrame, max_format_error: float = 0.5) -> pd.DataFrame:
    """Per variant, seed and box task: Acc@0.5, format-error rate, the random-box baseline and the verdict."""
    clean = records[records["mode"] == "clean"]
    rows = []
    for task in box_tasks(records):
        f_task = clean[clean["task"] == task]
        gold = [parse_box(a) for a in f_task.drop_duplicates(["seed", "item_id"])["answer"]]
        baseline = random_box_baseline(gold)
        for (variant, seed), f in f_task.groupby(["variant", "seed"], sort=False):
            acc = accuracy(f)
            fmt = float(f["format_error"].mean()) if "format_error" in f else 0.0
            reasons = []
            if acc <= baseline:
                reasons.append("Acc@0.5 at or below random boxes")
            if fmt >= max_format_error:
                reasons.append(f"format errors ≥ {max_format_error:.0%}")
            rows.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "task": task,
                    "acc@0.5": acc,
                    "format_error_rate": fmt,
                    "random_box_acc": baseline,
                    "collapsed": bool(reasons),
                    "why": "; ".join(reasons),
                }
            )
    return pd.DataFrame(rows)


@dataclass
class CollapseResult:
    table: pd.DataFrame  # per variant, seed and box task: Acc@0.5, format errors, random-box baseline, verdict


@register_analysis("grounding-collapse")
class GroundingCollapse(Analysis):
    """Localization collapse (study B): grounding no better than random boxes, or box outputs that do not parse."""

    class Params(PartParams):
        max_format_error: float = Field(0.5, gt=0, le=1)

    title = "Grounding collapse"
    Result = CollapseResult

    def compute(self, study: StudyData, measured) -> CollapseResult:
        return CollapseResult(collapse_table(study.results, self.params.max_format_error))

    def render(self, r: CollapseResult) -> Section:
        section = Section(self.title)
        table = r.table
        if table.empty:
            return section.text("No box-answer task in this study.")
        section.text(
            "A run is flagged *collapsed* on a box task when its Acc@IoU≥0.5 is at or below the random-box baseline "
            "(uniform random corners, seeded: what well-formed boxes score without looking) or when at least "
            f"{self.params.max_format_error:.0%} of its answers do not parse as boxes. Per seed, so the spread shows."
        )
        plot = table.assign(variant=table["variant"] + " @" + table["seed"].astype(str))
        section.figure(
            plots.grouped_bars(plot, "task", "acc@0.5", ylabel="Acc@0.5 (line: random boxes)"),
            "Grounding Acc@0.5 per run; compare with the random-box baseline in the table.",
            "grounding_collapse",
        )
        section.table(table, "Per variant and seed.")
        flagged = table[table["collapsed"]]
        section.text(
            f"{len(flagged)} of {len(table)} runs flagged."
            + "".join(
                f" **{r['variant']}** seed {r['seed']} on `{r['task']}`: {r['why']}." for _, r in flagged.iterrows()
            )
        )
        return section
