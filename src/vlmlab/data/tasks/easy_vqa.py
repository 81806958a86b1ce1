"""`easy-vqa`: the easy-VQA dataset shipped by the `easy-vqa` package (64x64 shapes, 13 answers)."""

from __future__ import annotations

from vlmlab.data.items import VQAItem
from vlmlab.data.tasks.base import Task
from vlmlab.errors import ConfigError
from vlmlab.registry import register_task

SHAPES = {"circle", "rectangle", "triangle"}
COLORS = {"red", "green", "blue", "black", "gray", "teal", "yellow", "brown"}
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

    def image_labels(self, items: list[VQAItem]) -> dict[str, dict[str, str]]:
        """Each easy-VQA image holds one shape of one colour; read both off the questions about it.

        "what is the blue shape?" -> rectangle gives shape and colour; "does the image contain a
        circle?" -> yes gives the shape (a negated question, "is there not a ...", flips the answer).
        """
        labels: dict[str, dict[str, str]] = {}
        for item in items:
            words = item.question.replace("?", "").split()
            found = labels.setdefault(item.image, {})
            named = {"shape": [w for w in words if w in SHAPES], "color": [w for w in words if w in COLORS]}
            if item.answer in SHAPES:
                found["shape"] = item.answer
                found.update({k: v[0] for k, v in named.items() if k == "color" and v})
            elif item.answer in COLORS:
                found["color"] = item.answer
                found.update({k: v[0] for k, v in named.items() if k == "shape" and v})
            else:
                negated = "not" in words or words[:2] == ["is", "no"]
                if (item.answer == "yes") != negated:  # the named attribute is present
                    found.update({k: v[0] for k, v in named.items() if v})
        return {path: lab for path, lab in labels.items() if lab}
