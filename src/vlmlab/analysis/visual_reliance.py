"""`visual-reliance`: accuracy with the image minus accuracy with a constant image, per variant and task."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from vlmlab.analysis.base import Analysis
from vlmlab.analysis.inference import estimate, pooled_mean, sample
from vlmlab.registry import PartParams, register_analysis
from vlmlab.render import plots
from vlmlab.render.document import Section
from vlmlab.study.data import StudyData


def reliance_rows(both: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group of `keys`: clean and blind accuracy over the same items, the gap and its 95% interval (questions
    resampled, a question's seeds together), n (pairs, questions, seeds) and the pairs left out for a missing score."""
    rows = []
    for group, f in both.groupby(keys, sort=False):
        ok = f["score_clean"].notna() & f["score_blind"].notna()
        g = f[ok].assign(one=1.0, gap=f["score_clean"] - f["score_blind"])
        e = estimate(sample(g, ["one", "gap"]), pooled_mean)
        rows.append(
            {
                **dict(zip(keys, group)),
                "clean": float(g["score_clean"].mean()),
                "blind": float(g["score_blind"].mean()),
                "gap": e.value,
                "ci_low": e.low,
                "ci_high": e.high,
                "n": int(ok.sum()),
                "questions": e.questions,
                "seeds": int(g["seed"].nunique()),
                "missing": int((~ok).sum()),
            }
        )
    return pd.DataFrame(rows)


@dataclass
class RelianceResult:
    has_blind: bool
    per_task: pd.DataFrame  # variant, task, clean, blind, gap, ci_low, ci_high, n
    per_category: pd.DataFrame | None  # the same per category (None unless `by_category`)


@register_analysis("visual-reliance")
class VisualReliance(Analysis):
    """How much each variant's answers depend on the image: clean minus blind accuracy (paired, 95% CI)."""

    class Params(PartParams):
        by_category: bool = True  # also a table and figure per category

    title = "Visual reliance (clean vs blind)"
    Result = RelianceResult
    version = 2  # questions resampled (BCa); questions, seeds, missing columns

    def compute(self, study: StudyData, measured) -> RelianceResult:
        records = study.results
        if "blind" not in set(records["mode"]):
            return RelianceResult(False, pd.DataFrame(), None)
        keys = ["variant", "seed", "task", "item_id"]
        clean = records[records["mode"] == "clean"][keys + ["category", "score"]]
        blind = records[records["mode"] == "blind"][keys + ["score"]]
        both = clean.merge(blind, on=keys, suffixes=("_clean", "_blind"))
        per_category = reliance_rows(both, ["variant", "task", "category"]) if self.params.by_category else None
        return RelianceResult(True, reliance_rows(both, ["variant", "task"]), per_category)

    def render(self, r: RelianceResult) -> Section:
        section = Section(self.title)
        if not r.has_blind:
            return section.text("No blind evaluation in this study (`eval.blind: false`), so nothing to compare.")
        table = r.per_task
        section.text(
            "The gap is accuracy with the real image minus accuracy when every image is replaced by a constant "
            "one, over the same items. A gap near zero means the task is answered from the question alone "
            "(language priors); a large gap means the variant reads the image."
        )
        section.figure(
            plots.grouped_bars(table, "task", "gap", "ci_low", "ci_high", ylabel="clean − blind accuracy"),
            "Visual-reliance gap per task and variant (95% interval, questions resampled).",
            "visual_reliance",
        )
        section.table(table, "Pooled over seeds; n = pairs, from `questions` × `seeds`.")
        top = table.sort_values("gap", ascending=False).iloc[0]
        section.text(
            f"Largest reliance: **{top['variant']}** on `{top['task']}` (gap {top['gap']:+.3f}, "
            f"95% CI {top['ci_low']:+.3f} to {top['ci_high']:+.3f})."
        )
        if r.per_category is not None:
            per_cat = r.per_category
            labelled = per_cat.assign(group=per_cat["task"] + " / " + per_cat["category"])
            section.figure(
                plots.grouped_bars(labelled, "group", "gap", "ci_low", "ci_high", ylabel="clean − blind accuracy"),
                "Visual-reliance gap per category and variant (95% interval, questions resampled).",
                "visual_reliance_by_category",
            )
            section.table(per_cat, "Per category, pooled over seeds.")
        return section
