"""What a task scores without looking at the image, and which variants do better than that.

Chance per task: for a box-output task, the larger of the random-box baseline (well-formed boxes with random
corners) and the best blind accuracy of any variant; for any other task, the best blind accuracy of any variant
(what the question alone gets), or the majority-answer rate when the study has no blind evaluation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vlmlab.analysis.collapse import box_tasks
from vlmlab.analysis.exclusive import chance_levels
from vlmlab.analysis.inference import ALPHA, binomial_above, estimate, pooled_mean, sample
from vlmlab.metrics import parse_box, random_box_baseline


def chance_by_task(records: pd.DataFrame) -> dict[str, tuple[float, str]]:
    """{task: (chance, where it comes from)} for every task with clean records."""
    levels = chance_levels(records, "task").set_index("task")
    boxes = set(box_tasks(records))
    clean = records[records["mode"] == "clean"]
    out = {}
    for task, row in levels.iterrows():
        chance, source = float(row["chance"]), str(row["chance_from"])
        if task in boxes:
            gold = [parse_box(a) for a in clean[clean["task"] == task].drop_duplicates("item_id")["answer"]]
            boxes_chance = random_box_baseline([g for g in gold if g is not None])
            blind = source == "best blind accuracy"
            chance, source = (chance, source) if blind and chance > boxes_chance else (boxes_chance, "random boxes")
        out[task] = (chance, source)
    return out


def above_chance(records: pd.DataFrame, variant: str, task: str, chance: float) -> tuple[bool, float]:
    """(whether the variant's accuracy on the task is above chance, the accuracy). Scores of 0 and 1 (exact match,
    boxes): an exact one-sided binomial test at 2.5% in every seed on its own (one answer per question, so the
    test is exact; rare hits are where a bootstrap is least reliable). Soft scores (VQA's): the 95% interval of
    accuracy − chance, questions resampled, above 0."""
    rows = records[(records["mode"] == "clean") & (records["variant"] == variant) & (records["task"] == task)]
    rows = rows[rows["score"].notna()]
    if rows.empty:
        return False, float("nan")
    scores = rows["score"].astype(float)
    if scores.isin([0.0, 1.0]).all():
        per_seed = [binomial_above(int(f["score"].sum()), len(f), chance) for _, f in rows.groupby("seed")]
        return all(p < ALPHA / 2 for p in per_seed), float(scores.mean())
    frame = rows.assign(one=1.0, gap=scores - chance)
    return estimate(sample(frame, ["one", "gap"]), pooled_mean).above(0), float(scores.mean())


def tasks_above_chance(records: pd.DataFrame, variants: list[str]) -> tuple[list[str], dict[str, str]]:
    """(tasks where some of `variants` is above chance, {task at chance for all of them: the numbers})."""
    chance = chance_by_task(records)
    taking_part, at_chance = [], {}
    for task, (level, source) in chance.items():
        found = {v: above_chance(records, v, task, level) for v in variants}
        if any(above for above, _ in found.values()):
            taking_part.append(task)
        else:
            accs = ", ".join(f"{v} {acc:.3f}" for v, (_, acc) in found.items() if np.isfinite(acc))
            at_chance[task] = f"{accs} vs chance {level:.3f} ({source})"
    return taking_part, at_chance
