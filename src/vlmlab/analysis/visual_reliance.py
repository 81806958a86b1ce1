"""`visual-reliance`: accuracy with the image minus accuracy with a constant image, per variant and task."""

from __future__ import annotations

import pandas as pd

from vlmlab.analysis.base import Analysis, paired_bootstrap_ci
from vlmlab.registry import PartParams, register_analysis
from vlmlab.report import plots
from vlmlab.report.document import Section
from vlmlab.study.data import StudyData


@register_analysis("visual-reliance")
class VisualReliance(Analysis):
    """How much each variant's answers depend on the image: clean minus blind accuracy (paired, 95% CI)."""

    class Params(PartParams):
        by_category: bool = True  # also a table and figure per category

    title = "Visual reliance (clean vs blind)"

    def run(self, study: StudyData) -> Section:
        section = Section(self.title)
        records = study.results
        if "blind" not in set(records["mode"]):
            return section.text("No blind evaluation in this study (`eval.blind: false`), so nothing to compare.")
        keys = ["variant", "seed", "task", "item_id"]
        clean = records[records["mode"] == "clean"][keys + ["category", "score"]]
        blind = records[records["mode"] == "blind"][keys + ["score"]]
        both = clean.merge(blind, on=keys, suffixes=("_clean", "_blind"))
        rows = []
        for (variant, task), f in both.groupby(["variant", "task"], sort=False):
            low, high = paired_bootstrap_ci(f["score_clean"], f["score_blind"])
            rows.append(
                {
                    "variant": variant,
                    "task": task,
                    "clean": f["score_clean"].mean(),
                    "blind": f["score_blind"].mean(),
                    "gap": f["score_clean"].mean() - f["score_blind"].mean(),
                    "ci_low": low,
                    "ci_high": high,
                    "n": len(f),
                }
            )
        table = pd.DataFrame(rows)
        section.text(
            "The gap is accuracy with the real image minus accuracy when every image is replaced by a constant "
            "one, over the same items. A gap near zero means the task is answered from the question alone "
            "(language priors); a large gap means the variant reads the image."
        )
        section.figure(
            plots.grouped_bars(table, "task", "gap", "ci_low", "ci_high", ylabel="clean − blind accuracy"),
            "Visual-reliance gap per task and variant (95% paired bootstrap CI).",
            "visual_reliance",
        )
        section.table(table, "Pooled over seeds; n = items × seeds.")
        top = table.sort_values("gap", ascending=False).iloc[0]
        section.text(
            f"Largest reliance: **{top['variant']}** on `{top['task']}` (gap {top['gap']:+.3f}, "
            f"95% CI {top['ci_low']:+.3f} to {top['ci_high']:+.3f})."
        )
        if self.params.by_category:
            per = []
            for (variant, task, category), f in both.groupby(["variant", "task", "category"], sort=False):
                low, high = paired_bootstrap_ci(f["score_clean"], f["score_blind"])
                per.append(
                    {
                        "variant": variant,
                        "task": task,
                        "category": category,
                        "clean": f["score_clean"].mean(),
                        "blind": f["score_blind"].mean(),
                        "gap": f["score_clean"].mean() - f["score_blind"].mean(),
                        "ci_low": low,
                        "ci_high": high,
                        "n": len(f),
                    }
                )
            per_cat = pd.DataFrame(per)
            labelled = per_cat.assign(group=per_cat["task"] + " / " + per_cat["category"])
            section.figure(
                plots.grouped_bars(labelled, "group", "gap", "ci_low", "ci_high", ylabel="clean − blind accuracy"),
                "Visual-reliance gap per category and variant (95% paired bootstrap CI).",
                "visual_reliance_by_category",
            )
            section.table(per_cat, "Per category, pooled over seeds.")
        return section
