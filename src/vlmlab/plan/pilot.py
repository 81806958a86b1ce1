"""The noise of each comparison a study makes, read off a pilot study's per-item records, and what it implies
for the planned study: the smallest difference it can detect, and the questions or seeds a stated effect needs.

The comparisons are the ones `factor-effects` and the claims make: each level of a factor against the factor's
first level, per task, on the same questions and seeds, the other factors' levels paired and then averaged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from vlmlab.plan.power import minimum_detectable_effect, questions_needed, seeds_needed
from vlmlab.study.data import StudyData


@dataclass(frozen=True)
class PairedNoise:
    """What a pilot says about one paired comparison (see `vlmlab.plan.power` for the model)."""

    questions: int
    seeds: int
    mean: float  # the pilot's own mean difference
    sd_paired: float  # SD over questions of the difference within one seed
    seed_share: float  # share of that variance that averages away over seeds (0 with one pilot seed)
    sd_seed: float  # SD of a whole seed's shift (0 with one pilot seed: not estimable)


def paired_noise(diffs: pd.DataFrame) -> PairedNoise:
    """Estimate the noise of a comparison from its differences, one row per question, one column per seed
    (method of moments: within-seed variance over questions, across-seed variance within questions after
    removing each seed's mean, and the variance of the seed means beyond what their questions explain)."""
    d = diffs.dropna().to_numpy(dtype=float)
    n, k = d.shape
    if n < 2:
        raise ValueError("a comparison needs at least two paired questions")
    total = float(np.mean(np.var(d, axis=0, ddof=1)))
    share, sd_seed = 0.0, 0.0
    if k >= 2:
        seed_means = d.mean(axis=0)
        within = float(np.mean(np.var(d - seed_means, axis=1, ddof=1)))
        share = min(1.0, within / total) if total > 0 else 0.0
        sd_seed = float(np.sqrt(max(0.0, np.var(seed_means, ddof=1) - within / n)))
    return PairedNoise(n, k, float(d.mean()), float(np.sqrt(total)), share, sd_seed)


def comparisons(study: StudyData) -> list[tuple[str, str, str, str, pd.DataFrame]]:
    """(factor, level, base level, task, differences question x seed) for every level against its factor's
    first level, on the clean evaluation."""
    r = study.results[study.results["mode"] == "clean"]
    factors = list(study.spec.factors)
    out = []
    for factor in factors:
        levels = list(study.spec.factors[factor].levels)
        others = [f for f in factors if f != factor]
        keys = ["task", "item_id", "seed", *others]
        base = r[r[factor] == levels[0]].set_index(keys)["score"]
        for level in levels[1:]:
            other = r[r[factor] == level].set_index(keys)["score"]
            diff = (other - base).dropna().groupby(level=["task", "item_id", "seed"]).mean()
            for task, rows in diff.groupby(level="task"):
                table = rows.droplevel("task").unstack("seed")
                out.append((factor, level, levels[0], str(task), table))
    return out


@dataclass(frozen=True)
class PowerRow:
    factor: str
    comparison: str  # "level − base"
    task: str
    noise: PairedNoise
    questions: int  # in the planned study
    seeds: int  # in the planned study
    mde: float
    questions_needed: int | None  # at the planned seeds
    seeds_needed: int | None  # at the planned questions


def power_table(
    pilot: StudyData,
    planned_questions: dict[str, int],
    planned_seeds: int,
    effect: float,
    alpha: float = 0.05,
    power: float = 0.80,
) -> list[PowerRow]:
    """For every comparison of the pilot: its noise, the planned study's MDE, and what `effect` needs."""
    rows = []
    for factor, level, base, task, table in comparisons(pilot):
        if len(table.dropna()) < 2:
            continue
        noise = paired_noise(table)
        n = planned_questions.get(task, noise.questions)
        args = dict(alpha=alpha, power=power, seed_share=noise.seed_share, sd_seed=noise.sd_seed)
        rows.append(
            PowerRow(
                factor,
                f"{level} − {base}",
                task,
                noise,
                n,
                planned_seeds,
                minimum_detectable_effect(noise.sd_paired, n, planned_seeds, **args),
                questions_needed(effect, noise.sd_paired, planned_seeds, **args),
                seeds_needed(effect, noise.sd_paired, n, **args),
            )
        )
    return rows
