"""`easy-vqa`: the easy-VQA dataset shipped by the `easy-vqa` package (64x64 shapes, 13 answers)."""

from __future__ import annotations

from vlmlab.data.items import VQAItem
from vlmlab.data.tasks.base import Task
from vlmlab.errors import ConfigError
from vlmlab.registry import register_task

SHAPES = {"circle", "rectangle", "triangle"}
YES_NO = {"yes", "no"}


def category_of(answer: str) -> str:
    """easy-VQA's question families, read off the answer: shape, color or yes/no."""
    if answer in SHAPES:
        return "shape"
    if answer in YES_NO:
        return "yes/no"
    return "color"


@register_task("easy-vqa")
class EasyVQA(Task):
    """38,575 train / 9,673 test questions over 4,000 / 1,000 images; exact-match accuracy."""

    def load(self, split: str, limit: int | None = None, path: str | None = None) -> list[VQAItem]:
        import easy_vqa

        loaders = {
            "train": (easy_vqa.get_train_questions, easy_vqa.get_train_image_paths),
            "test": (easy_vqa.get_test_questions, easy_vqa.get_test_image_paths),
        }
        if split not in loaders:
            raise ConfigError("split", f"easy-vqa has splits {', '.join(loaders)}, not {split!r}")
        get_questions, get_paths = loaders[split]
        questions, answers, image_ids = get_questions()
        paths = get_paths()
        n = len(questions) if limit is None else min(limit, len(questions))
        return [
            VQAItem(
                item_id=f"{split}-{i}",
                task="easy-vqa",
                category=category_of(answers[i]),
                question=questions[i],
                answer=answers[i],
                image=paths[image_ids[i]],
            )
            for i in range(n)
        ]
