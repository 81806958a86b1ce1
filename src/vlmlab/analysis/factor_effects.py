"""`factor-effects`: per factor and task, each level's accuracy minus the reference level's on the same items."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from vlmlab.analysis.base import Analysis, paired_bootstrap_ci
from vlmlab.metrics import accuracy
from vlmlab.registry import PartParams, register_analysis
from vlmlab.render import plots
from vlmlab.render.document import Section
from vlmlab.study.data import StudyData


def verdict(low: float, high: float) -> str:
    if low > 0:
        return "helps"
    if high < 0:
        return "hurts"
    return "no detectable difference"


def paired_scores(
    study: StudyData, factor: str, level: str, mode: str = "clean", reference_level: str | None = None
) -> pd.DataFrame:
    """`score_ref` (the factor's first level, or `reference_level`) and `score_level` of the same items: same seed,
    task, item and levels of every other factor, so a difference isolates this factor."""
    others = [f for f in study.spec.factors if f != factor]
    keys = ["seed", "task", "item_id", *others]
    records = study.results[study.results["mode"] == mode]
    ref = reference_level if reference_level is not None else list(study.spec.factors[factor].levels)[0]
    reference = records[records[factor] == ref][keys + ["score", "category"]]
    this = records[records[factor] == level][keys + ["score"]]
    return reference.merge(this, on=keys, suffixes=("_ref", "_level"))


def level_deltas(
    study: StudyData, factor: str, mode: str = "clean", by: str = "task", per_seed: bool = False
) -> pd.DataFrame:
    """Paired deltas of every non-reference level against the factor's first level, per `by` group.

    Pairs are the same item, seed and levels of every other factor, so a delta isolates this factor.
    Seeds are pooled (items x seeds are the resampled units) unless `per_seed`.
    """
    levels = list(study.spec.factors[factor].levels)
    rows = []
    for level in levels[1:]:
        paired = paired_scores(study, factor, level, mode)
        groups = ["seed", by] if per_seed else [by]
        for group, f in paired.groupby(groups, sort=False):
            low, high = paired_bootstrap_ci(f["score_level"], f["score_ref"])
            delta = accuracy(f, "score_level") - accuracy(f, "score_ref")
            where = dict(zip(groups, group if isinstance(group, tuple) else (group,)))
            rows.append(
                {
                    "comparison": f"{level} − {levels[0]}",
                    "level": level,
                    **where,
                    "reference": accuracy(f, "score_ref"),
                    "accuracy": accuracy(f, "score_level"),
                    "delta": delta,
                    "ci_low": low,
                    "ci_high": high,
                    "verdict": verdict(low, high),
                    "n": len(f),
                }
            )
    return pd.DataFrame(rows)


@dataclass
class FactorEffectsResult:
    by: str
    per_seed: bool
    variants: list[str]  # in spec order: a comparison is drawn in its level's variant colour
    tables: dict[str, pd.DataFrame]  # factor -> level_deltas (empty: a single level)


@register_analysis("factor-effects")
class FactorEffects(Analysis):
    """Does each level help, per task? Paired accuracy deltas against the first level, with 95% bootstrap CIs."""

    class Params(PartParams):
        by: str = "task"  # or "category" for a finer breakdown
        per_seed: bool = False  # one delta per seed instead of pooling seeds

    title = "Factor effects per task (paired deltas)"
    Result = FactorEffectsResult

    def compute(self, study: StudyData, measured) -> FactorEffectsResult:
        p = self.params
        tables = {}
        if p.by in ("task", "category"):
            tables = {f: level_deltas(study, f, by=p.by, per_seed=p.per_seed) for f in study.spec.factors}
        return FactorEffectsResult(p.by, p.per_seed, study.variants, tables)

    def render(self, r: FactorEffectsResult) -> Section:
        section = Section(self.title)
        if r.by not in ("task", "category"):
            return section.text(f"`by: {r.by}` is not a results column (use task or category).")
        section.text(
            "For each factor, every level is compared with the factor's first level on the **same items** "
            "(same seed, same levels of every other factor): the delta is the difference in accuracy, the "
            "interval a 95% paired bootstrap. *helps* / *hurts* = the interval excludes zero."
        )
        palette = plots.colours(r.variants)
        for factor, table in r.tables.items():
            if table.empty:
                section.text(f"Factor `{factor}` has a single level: nothing to compare.")
                continue
            plot_frame = table.rename(columns={"comparison": "variant"})
            if r.per_seed:
                plot_frame = plot_frame.assign(variant=plot_frame["variant"] + " @" + plot_frame["seed"].astype(str))
            colour_of = {c: palette[lv] for c, lv in zip(plot_frame["variant"], table["level"]) if lv in palette}
            section.figure(
                plots.grouped_bars(
                    plot_frame,
                    r.by,
                    "delta",
                    "ci_low",
                    "ci_high",
                    colour_of=colour_of,
                    ylabel=f"accuracy delta vs {table['comparison'].iloc[0].split(' − ')[1]}",
                ),
                f"Factor `{factor}`: accuracy of each level minus the reference level, per {r.by} "
                "(95% paired bootstrap CI).",
                f"factor_effects_{factor}",
            )
            section.table(table.drop(columns=["level"]), f"Factor `{factor}`, clean images; n = paired items × seeds.")
            for comparison, f in table.groupby(["comparison", "seed"] if r.per_seed else "comparison", sort=False):
                comparison = " @seed ".join(map(str, comparison)) if isinstance(comparison, tuple) else comparison
                parts = [f"`{row[r.by]}` {row['delta']:+.3f} ({row['verdict']})" for _, row in f.iterrows()]
                section.text(f"**{comparison}**: " + "; ".join(parts) + ".")
        return section
