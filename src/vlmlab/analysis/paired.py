"""Two levels of a factor paired on the same questions, seeds and levels of every other factor, with what pairing lost.

Every comparison of two levels starts here: a row of one level pairs with the row of the other level that has
the same seed, task, item and levels of every other factor, so a difference isolates this factor. What cannot
pair, and pairs whose value is missing (NaN), are counted, never dropped silently nor read as 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from vlmlab.analysis.inference import Estimate, Sample, estimate, point, pooled_mean, sample
from vlmlab.study.data import StudyData


@dataclass
class Paired:
    """Paired rows (`value_ref`, `value_level`, `diff` = level − reference, `one` = 1) and what pairing lost."""

    frame: pd.DataFrame
    missing_rows: int = 0  # pairs left out because a value is missing (NaN) on either side
    missing_questions: int = 0  # questions that lost every pair to missing values
    unpaired_rows: int = 0  # rows of either level with no partner at the other level
    tasks_ref: tuple[str, ...] = ()  # tasks the reference level has rows for (before pairing)
    tasks_level: tuple[str, ...] = ()

    @property
    def questions(self) -> int:
        return int(self.frame.groupby(["task", "item_id"]).ngroups) if len(self.frame) else 0

    @property
    def seeds(self) -> int:
        return int(self.frame["seed"].nunique()) if len(self.frame) else 0

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(self.frame["task"])) if len(self.frame) else []

    def missing_tasks(self) -> dict[str, str]:
        """Tasks one level has and the comparison lacks: {task: why}."""
        out = {}
        for task in dict.fromkeys(self.tasks_ref + self.tasks_level):
            if task in self.tasks:
                continue
            if task not in self.tasks_level:
                out[task] = "no rows at the compared level"
            elif task not in self.tasks_ref:
                out[task] = "no rows at the reference level"
            else:
                out[task] = "no pair with a score"
        return out

    def only(self, tasks) -> Paired:
        keep = self.frame["task"].isin(list(tasks))
        return Paired(self.frame[keep], self.missing_rows, self.missing_questions, self.unpaired_rows)

    def sample(self, column: str = "diff") -> Sample:
        return sample(self.frame.assign(_v=self.frame[column]), ["one", "_v"])

    def seed_frames(self):
        return self.frame.groupby("seed", sort=True)

    def lost_text(self) -> str:
        """What pairing lost, in words ("" when nothing)."""
        parts = []
        if self.missing_rows:
            lost = f", {self.missing_questions} questions entirely" if self.missing_questions else ""
            parts.append(f"{self.missing_rows} pairs with a missing score left out{lost}")
        if self.unpaired_rows:
            parts.append(f"{self.unpaired_rows} rows without a partner at the other level")
        return "; ".join(parts)


def pair_levels(
    study: StudyData,
    factor: str,
    level: str,
    reference: str | None = None,
    mode: str = "clean",
    column: str = "score",
    tasks: list[str] | None = None,
) -> Paired:
    """`level` − `reference` (default: the factor's first level) of `factor` on the same rows of `mode`."""
    others = [f for f in study.spec.factors if f != factor]
    keys = ["seed", "task", "item_id", *others]
    records = study.results[study.results["mode"] == mode]
    if tasks is not None:
        records = records[records["task"].isin(tasks)]
    ref = reference if reference is not None else list(study.spec.factors[factor].levels)[0]
    extra = ["category"] if "category" in records else []
    a = records[records[factor] == ref][keys + extra + [column]].rename(columns={column: "value_ref"})
    b = records[records[factor] == level][keys + [column]].rename(columns={column: "value_level"})
    return pair_frames(a, b, keys)


def pair_rows(
    study: StudyData, factor: str, level: str, reference: str, columns: list[str], mode: str = "clean"
) -> tuple[pd.DataFrame, int]:
    """(`columns` of both levels on the same rows, suffixed `_ref` / `_level`; rows left without a partner)."""
    others = [f for f in study.spec.factors if f != factor]
    keys = ["seed", "task", "item_id", *others]
    records = study.results[study.results["mode"] == mode]
    present = [c for c in columns if c in records]
    a = records[records[factor] == reference][keys + present]
    b = records[records[factor] == level][keys + present]
    both = a.merge(b, on=keys, suffixes=("_ref", "_level"))
    for c in set(columns) - set(present):  # a column the records lack (e.g. no confidence at all) is missing
        both[f"{c}_ref"] = both[f"{c}_level"] = np.nan
    return both, len(a) + len(b) - 2 * len(both)


def pair_frames(a: pd.DataFrame, b: pd.DataFrame, keys: list[str]) -> Paired:
    """Rows of `a` (`value_ref`) and `b` (`value_level`) joined on `keys`, missing values counted."""
    both = a.merge(b, on=keys, how="inner")
    unpaired = len(a) + len(b) - 2 * len(both)
    ok = both["value_ref"].notna() & both["value_level"].notna()
    lost_q = set(map(tuple, both.loc[~ok, ["task", "item_id"]].to_numpy())) - set(
        map(tuple, both.loc[ok, ["task", "item_id"]].to_numpy())
    )
    frame = both[ok].astype({"value_ref": float, "value_level": float})
    frame = frame.assign(diff=frame["value_level"] - frame["value_ref"], one=1.0)
    return Paired(
        frame.reset_index(drop=True),
        int((~ok).sum()),
        len(lost_q),
        int(unpaired),
        tuple(dict.fromkeys(a["task"])),
        tuple(dict.fromkeys(b["task"])),
    )


def n_text(questions: int, seeds: int) -> str:
    return f"n {questions} questions × {seeds} seed{'s' if seeds != 1 else ''}"


@dataclass
class Comparison:
    """The pooled paired delta of two levels (every row of the compared tasks), its interval and each seed's own."""

    paired: Paired
    pooled: Estimate
    per_seed: dict[int, float]

    def text(self) -> str:
        """The delta, its interval, n, and each seed's own delta when there are several."""
        seeds = "; per seed " + ", ".join(f"{d:+.3f}" for d in self.per_seed.values()) if len(self.per_seed) > 1 else ""
        return f"{self.pooled.text()} ({n_text(self.paired.questions, self.paired.seeds)}{seeds})"

    def seeds_agree(self, sign: int) -> bool:
        return all(np.sign(d) == sign for d in self.per_seed.values())


def compare(paired: Paired, thresholds=(0.0,), level: float = 0.95) -> Comparison | None:
    """The pooled comparison of paired rows (None when nothing pairs), its interval at `level`."""
    if paired.frame.empty:
        return None
    pooled = estimate(paired.sample(), pooled_mean, thresholds, level)
    per_seed = {int(s): point(Paired(f).sample(), pooled_mean) for s, f in paired.seed_frames()}
    return Comparison(paired, pooled, per_seed)


def per_task(paired: Paired, thresholds=(0.0,)) -> dict[str, tuple[Estimate, dict[int, float]]]:
    """Each task's own paired delta, its interval and each seed's own delta."""
    out = {}
    for task in paired.tasks:
        rows = paired.frame[paired.frame["task"] == task]
        seeds = {int(seed): float(f["diff"].mean()) for seed, f in rows.groupby("seed", sort=True)}
        out[task] = (estimate(Paired(rows).sample(), pooled_mean, thresholds), seeds)
    return out
