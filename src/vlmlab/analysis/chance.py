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
from vlmlab.analysis.inference import Estimate, estimate, pooled_mean, sample
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


def above_chance(records: pd.DataFrame, variant: str, task: str, chance: float) -> Estimate:
    """The variant's accuracy minus chance on the task's clean records, its questions resampled."""
    rows = records[(records["mode"] == "clean") & (records["variant"] == variant) & (records["task"] == task)]
    rows = rows[rows["score"].notna()]
    frame = rows.assign(one=1.0, gap=rows["score"].astype(float) - chance)
    return estimate(sample(frame, ["one", "gap"]), pooled_mean)


def tasks_above_chance(records: pd.DataFrame, variants: list[str]) -> tuple[list[str], dict[str, str]]:
    """(tasks where some of `variants` is above chance, {task at chance for all of them: the numbers})."""
    chance = chance_by_task(records)
    taking_part, at_chance = [], {}
    for task, (level, source) in chance.items():
        gaps = {v: above_chance(records, v, task, level) for v in variants}
        if any(g.above(0) for g in gaps.values()):
            taking_part.append(task)
        else:
            accs = ", ".join(f"{v} {g.value + level:.3f}" for v, g in gaps.items() if np.isfinite(g.value))
            at_chance[task] = f"{accs} vs chance {level:.3f} ({source})"
    return taking_part, at_chance
