"""How a claim of a seed paper is judged from a study's records: paired deltas, their verdicts, the claim record."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from vlmlab.analysis.factor_effects import paired_scores
from vlmlab.config import read_yaml
from vlmlab.study.data import StudyData

REPRODUCED, NOT, INCONCLUSIVE, UNTESTED = "reproduced", "not reproduced", "inconclusive at this scale", "not tested"


@dataclass
class Delta:
    """Mean score of one level minus another's on the same items × seeds, its 95% bootstrap interval, and the
    delta of each seed on its own."""

    delta: float
    low: float
    high: float
    n: int
    per_seed: list[float] = field(default_factory=list)

    def agree(self) -> int:
        """Seeds whose own delta has the pooled delta's sign."""
        return int(sum(np.sign(d) == np.sign(self.delta) for d in self.per_seed))

    def text(self) -> str:
        return f"{self.delta:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def paired_delta(
    study: StudyData, factor: str, level: str, reference: str, tasks: list[str] | None = None, samples: int = 1000
) -> Delta | None:
    """`level` − `reference` of `factor` on the same items, seeds and levels of every other factor (clean images),
    over `tasks` (all when None), pooled; None when no item pairs up. The interval resamples whole questions
    (task, item): the rows of one question across seeds and other factors move together, so they are not counted
    as independent evidence. Pairs with a missing score are left out."""
    paired = paired_scores(study, factor, level, reference_level=reference)
    if tasks is not None:
        paired = paired[paired["task"].isin(tasks)]
    paired = paired.dropna(subset=["score_level", "score_ref"])
    if paired.empty:
        return None
    paired = paired.assign(diff=paired["score_level"] - paired["score_ref"])
    per_item = paired.groupby(["task", "item_id"], sort=False)["diff"].agg(["sum", "count"])
    sums, counts = per_item["sum"].to_numpy(dtype=float), per_item["count"].to_numpy(dtype=float)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(sums), size=(samples, len(sums)))
    means = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    per_seed = [float(f["diff"].mean()) for _, f in paired.groupby("seed", sort=True)]
    low, high = np.percentile(means, [2.5, 97.5])
    return Delta(float(paired["diff"].mean()), float(low), float(high), len(paired), per_seed)


def superiority(d: Delta) -> str:
    """Reproduced when the interval is above 0 and every seed agrees; not reproduced when it is below 0."""
    if d.low > 0:
        return REPRODUCED if d.agree() == len(d.per_seed) else INCONCLUSIVE
    if d.high < 0:
        return NOT if d.agree() == len(d.per_seed) else INCONCLUSIVE
    return INCONCLUSIVE


def non_inferiority(d: Delta, margin: float) -> str:
    """ "Matches or beats": reproduced when the whole interval is above −margin and so is every seed's own delta;
    not reproduced when the interval is below −margin and so is every seed's delta."""
    if d.low > -margin and all(x > -margin for x in d.per_seed):
        return REPRODUCED
    if d.high < -margin and all(x < -margin for x in d.per_seed):
        return NOT
    return INCONCLUSIVE


def seed_note(seeds: int, agree: int | None = None) -> str:
    if seeds < 2:
        return " Rests on one seed."
    return "" if agree is None else f" {agree} of {seeds} seeds agree on their own."


def claim(paper: str, cid: str, text: str, verdict: str, evidence: str, analysis: str, figure=None) -> dict:
    """One claim's record: `figure` is the small frame its panel draws (None: no panel)."""
    return {
        "id": cid,
        "paper": paper,
        "claim": text,
        "verdict": verdict,
        "evidence": evidence,
        "analysis": analysis,
        "figure": figure,
    }


def factor_declaring(study: StudyData, key: str) -> str | None:
    """The first factor that declares `key` or a key under it (`model.vision` matches `model.vision.id`)."""
    for name, factor in study.spec.factors.items():
        if any(k == key or k.startswith(key + ".") for k in factor.keys):
            return name
    return None


def level_of(study: StudyData, variant: str, factor: str) -> str:
    return str(study.results.loc[study.results["variant"] == variant, factor].iloc[0])


def delta_frame(rows: dict[str, Delta]) -> pd.DataFrame:
    """Labelled deltas as the frame a claim's panel draws (label, delta, ci_low, ci_high)."""
    return pd.DataFrame(
        [{"label": k, "delta": d.delta, "ci_low": d.low, "ci_high": d.high} for k, d in rows.items() if d is not None]
    )


def part_ids(study: StudyData, factor: str, part: str) -> dict[str, str]:
    """Level of `factor` -> the id of `model.<part>` its runs are built with: what the level sets (`model.<part>`
    or `model.<part>.id`), else what the level's first run was built with."""
    out = {}
    for variant in study.variants:
        level = level_of(study, variant, factor)
        if level in out:
            continue
        sets = study.spec.factors[factor].levels.get(level, {})
        whole = sets.get(f"model.{part}")
        if isinstance(whole, dict) and "id" in whole:
            out[level] = str(whole["id"])
        elif f"model.{part}.id" in sets:
            out[level] = str(sets[f"model.{part}.id"])
        else:
            out[level] = str(read_yaml(study.run(variant, study.seeds[0]).config)["model"][part]["id"])
    return out
