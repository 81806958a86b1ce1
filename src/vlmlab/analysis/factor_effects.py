"""`factor-effects`: per factor and task, each level's accuracy minus the reference level's on the same questions.

Intervals come from `analysis.inference`: questions are resampled, a question's rows across seeds and the levels
of other factors moving together. *helps* / *hurts*: the 95% interval excludes 0 (per comparison); `p_holm`
adjusts every comparison of the section together (Holm), for a reader who wants the family-wise view.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from vlmlab.analysis.base import Analysis
from vlmlab.analysis.inference import estimate, holm, pooled_mean
from vlmlab.analysis.paired import Paired, pair_levels, pair_rows
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
    task, item and levels of every other factor, so a difference isolates this factor (rows with a missing score
    are left out; `pair_levels` counts them)."""
    paired = pair_levels(study, factor, level, reference_level, mode)
    return paired.frame.rename(columns={"value_ref": "score_ref", "value_level": "score_level"})


def level_deltas(
    study: StudyData, factor: str, mode: str = "clean", by: str = "task", per_seed: bool = False
) -> pd.DataFrame:
    """Paired deltas of every non-reference level against the factor's first level, per `by` group.

    Pairs are the same item, seed and levels of every other factor, so a delta isolates this factor. Seeds are
    pooled (questions are resampled, each with all its rows) unless `per_seed`. `n`: pairs; `questions`, `seeds`:
    what they come from; `missing`: pairs left out for a missing score; `mde`: the smallest delta this group
    detects at 80% power; `p`: two-sided, at 0.
    """
    levels = list(study.spec.factors[factor].levels)
    rows = []
    groups = ["seed", by] if per_seed else [by]
    for level in levels[1:]:
        paired = pair_levels(study, factor, level, mode=mode)
        raw, _ = pair_rows(study, factor, level, levels[0], ["score"], mode)
        if by in raw and by in paired.frame:
            lost = raw[raw[["score_ref", "score_level"]].isna().any(axis=1)].groupby(groups, sort=False).size()
        else:
            lost = pd.Series(dtype=int)
        for group, f in paired.frame.groupby(groups, sort=False):
            e = estimate(Paired(f).sample(), pooled_mean)
            key = group if isinstance(group, tuple) else (group,)
            rows.append(
                {
                    "comparison": f"{level} − {levels[0]}",
                    "level": level,
                    **dict(zip(groups, key)),
                    "reference": float(f["value_ref"].mean()),
                    "accuracy": float(f["value_level"].mean()),
                    "delta": e.value,
                    "ci_low": e.low,
                    "ci_high": e.high,
                    "verdict": verdict(e.low, e.high),
                    "n": len(f),
                    "questions": e.questions,
                    "seeds": int(f["seed"].nunique()),
                    "missing": int(lost.get(group, 0)),
                    "mde": e.mde(),
                    "p": e.p_two(0),
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
    version = 2  # questions resampled (BCa), n / questions / seeds / missing / MDE / Holm columns

    def compute(self, study: StudyData, measured) -> FactorEffectsResult:
        p = self.params
        tables = {}
        if p.by in ("task", "category"):
            tables = {f: level_deltas(study, f, by=p.by, per_seed=p.per_seed) for f in study.spec.factors}
            everything = [t["p"].tolist() if len(t) else [] for t in tables.values()]
            adjusted = iter(holm([x for ps in everything for x in ps]))
            tables = {f: t.assign(p_holm=[next(adjusted) for _ in range(len(t))]) for f, t in tables.items()}
        return FactorEffectsResult(p.by, p.per_seed, study.variants, tables)

    def render(self, r: FactorEffectsResult) -> Section:
        section = Section(self.title)
        if r.by not in ("task", "category"):
            return section.text(f"`by: {r.by}` is not a results column (use task or category).")
        count = sum(len(t) for t in r.tables.values())
        survive = sum(int((t["p_holm"] < 0.05).sum()) for t in r.tables.values() if len(t) and "p_holm" in t)
        section.text(
            "For each factor, every level is compared with the factor's first level on the **same questions** "
            "(same seed, same levels of every other factor): the delta is the difference in accuracy, the "
            "interval a 95% BCa bootstrap that resamples questions (a question's rows across seeds and other "
            "factors' levels move together). **helps** / **hurts** = the interval excludes zero. `n`: pairs, from "
            "`questions` × `seeds` (× other levels); `missing`: pairs left out for a missing score; `mde`: the "
            f"smallest delta the group detects with 80% power. This section makes {count} comparisons; each "
            f"verdict is per comparison (5% each), and `p_holm` adjusts all {count} together (Holm): {survive} "
            "stay below 0.05."
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
                parts = [
                    f"`{row[r.by]}` {row['delta']:+.3f} ({row['verdict']}; n {row['questions']} q × "
                    f"{row['seeds']} seed{'s' if row['seeds'] != 1 else ''})"
                    for _, row in f.iterrows()
                ]
                section.text(f"**{comparison}**: " + "; ".join(parts) + ".")
        return section
