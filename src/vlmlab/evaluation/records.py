"""Per-item records and the metrics over them: what `vlmlab eval` and `vlmlab score` both write.

A record is one answered item (RECORD_COLUMNS); `summarize` turns records into metrics.json: accuracy
overall, per task and per task/category, and per task the metric used (its official rule), what the
loader skipped, and the benchmark's own summary metrics (POPE: precision, recall, F1, yes ratio).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from vlmlab.config import DataSource, ImageConfig
from vlmlab.data.eval_mode import CLEAN, EvalMode
from vlmlab.data.items import VQAItem
from vlmlab.data.sources import load_source
from vlmlab.data.tasks.base import Task
from vlmlab.metrics import METRIC_SOURCES, accuracy

RECORD_COLUMNS = [
    "item_id",
    "task",
    "category",
    "question",
    "answer",
    "prediction",
    "score",
    "correct",
    "confidence",
    "stopped",
    "blind",
    "perturb",
    "image",
]


@dataclass
class EvalSet:
    """One evaluation source loaded: its task (which scores it) and items (gold answers as the mode shows them)."""

    source: DataSource
    task: Task
    items: list[VQAItem]


def load_eval_sets(sources: Sequence[DataSource], image: ImageConfig, mode: EvalMode = CLEAN) -> list[EvalSet]:
    """Every source's task and items; box answers in the processed frame of `image`, moved with a shift mode."""
    out = []
    for i, source in enumerate(sources):
        task, items = load_source(source, f"data.eval.{i}", image)
        out.append(EvalSet(source, task, [replace(it, answer=mode.answer(it.answer, image.size)) for it in items]))
    return out


def record(
    item: VQAItem,
    task: Task,
    prediction: str,
    mode: EvalMode,
    confidence: float = math.nan,
    stopped: bool | None = None,
) -> dict[str, Any]:
    """One record: the item, the prediction and the task's score of it (`correct` is full credit)."""
    score = float(task.score(prediction, item))
    return {
        "item_id": item.item_id,
        "task": item.task,
        "category": item.category,
        "question": item.question,
        "answer": item.answer,
        "prediction": prediction,
        "score": score,
        "correct": bool(score >= 1.0),
        "confidence": confidence,
        "stopped": stopped,
        "blind": mode.blind,
        "perturb": mode.perturb_tag,
        "image": item.image,
    }


def summarize(records: pd.DataFrame, tasks: dict[str, Task] | None = None) -> dict:
    """Accuracy (mean score) and n: overall, per task, per task/category; with `tasks` (task id -> the Task that
    scored it), per task its metric and rule, the loader's notes, and its benchmark summary overall and per
    category."""

    def acc(frame: pd.DataFrame) -> dict:
        return {"accuracy": accuracy(frame), "n": int(len(frame))}

    metrics = {
        "overall": acc(records),
        "per_task": {t: acc(f) for t, f in records.groupby("task", sort=True)},
        "per_category": {f"{t}/{c}": acc(f) for (t, c), f in records.groupby(["task", "category"], sort=True)},
    }
    if tasks:
        metrics["tasks"] = {}
        for name, frame in records.groupby("task", sort=True):
            task = tasks.get(name)
            if task is None:
                continue
            entry: dict[str, Any] = {"metric": task.metric, "rule": METRIC_SOURCES.get(task.metric, "")}
            if task.notes:
                entry["loader"] = dict(task.notes)
            overall = task.summary(list(frame["prediction"]), list(frame["answer"]))
            if overall:
                entry["summary"] = overall
                entry["summary_per_category"] = {
                    c: task.summary(list(f["prediction"]), list(f["answer"])) for c, f in frame.groupby("category")
                }
            metrics["tasks"][name] = entry
    return metrics
