"""The task interface: load items for a split, and score a prediction against an item."""

from __future__ import annotations

from vlmlab.data.items import VQAItem
from vlmlab.metrics import exact_match
from vlmlab.registry import PartParams


class Task:
    """A dataset of VQA items plus its metric. `answer_type` is one of short / yes-no / choice / box."""

    class Params(PartParams):
        pass

    answer_type = "short"
    splits: tuple[str, ...] = ("train", "test")

    def load(self, split: str, limit: int | None = None, path: str | None = None) -> list[VQAItem]:  # pragma: no cover
        raise NotImplementedError

    def image_labels(self, items: list[VQAItem]) -> dict[str, dict[str, str]]:
        """Image-level attribute labels `{image path: {attribute: class}}` for a vision-pretrain stage."""
        return {}

    def score(self, prediction: str, item: VQAItem) -> float:
        return exact_match(prediction, item.answer)
