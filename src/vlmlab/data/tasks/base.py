"""The task interface: load items for a split, score a prediction against an item, summarize a task's records."""

from __future__ import annotations

from typing import Any, ClassVar

from vlmlab.data.items import VQAItem
from vlmlab.metrics import METRICS
from vlmlab.registry import PartParams


class Task:
    """A dataset of VQA items plus its metric. `answer_type` is one of short / yes-no / choice / box.

    `metric` names the per-item score in `vlmlab.metrics.METRICS` (the benchmark's official rule); `load`
    may leave `notes` (e.g. records it skipped, with counts), which evaluation records in metrics.json."""

    class Params(PartParams):
        pass

    answer_type = "short"
    image_position_from_data: ClassVar[bool] = (
        False  # records say where the image goes (data.image.position is ignored)
    )
    metric: ClassVar[str] = "exact_match"
    splits: tuple[str, ...] = ("train", "test")
    # an evaluation prompt longer than the model's context: `refuse` (one line naming the item) or `cut` its
    # question to fit (vlmlab.data.context)
    overlong_prompts: ClassVar[str] = "refuse"

    def __init__(self) -> None:
        self.notes: dict[str, Any] = {}

    def load(self, split: str, limit: int | None = None, path: str | None = None) -> list[VQAItem]:  # pragma: no cover
        raise NotImplementedError

    def image_labels(self, items: list[VQAItem]) -> dict[str, dict[str, str]]:
        """Image-level attribute labels `{image path: {attribute: class}}` for a vision-pretrain stage."""
        return {}

    def image_objects(self, items: list[VQAItem]) -> dict[str, dict]:
        """Objects with boxes per image for a `dense` vision-pretrain stage: `{image path: {"size": (width, height),
        "objects": [{"box": [x1, y1, x2, y2] in pixels, attribute: class, ...}]}}`; empty when the task has none."""
        return {}

    def score(self, prediction: str, item: VQAItem) -> float:
        return METRICS[self.metric](prediction, item)

    def llava_key(self, record: dict) -> str | None:
        """The `native_id` a record of LLaVA-1.5's question file for this benchmark refers to (its question_id)."""
        return str(record["question_id"]) if "question_id" in record else None

    def summary(self, predictions: list[str], answers: list[str]) -> dict[str, float]:
        """Benchmark metrics beyond accuracy over a set of records (POPE: precision, recall, F1, yes ratio)."""
        return {}
