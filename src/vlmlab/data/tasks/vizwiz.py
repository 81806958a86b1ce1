"""`vizwiz`: VizWiz VQA (questions from blind people, many unanswerable), scored as VizWiz's evaluation API does."""

from __future__ import annotations

from pathlib import Path

from vlmlab.data.items import VQAItem
from vlmlab.data.tasks.base import Task
from vlmlab.data.tasks.local_files import field, image_under, read_json, require_path, require_split, take
from vlmlab.errors import DataError
from vlmlab.registry import register_task

LAYOUT = "a directory holding <split>.json (the VizWiz annotations) and the images in <split>/"


@register_task("vizwiz")
class VizWiz(Task):
    """VizWiz VQA; category = answer_type (yes/no, number, other, unanswerable); VizWiz's accuracy.

    `path` is a directory holding `{split}.json` (VizWiz's annotation list of `{image, question, answers:
    [{answer, answer_confidence}], answer_type, answerable}`) and the images in `{split}/`. The item id is
    `{split}-{image file stem}` (VizWiz has one question per image). The score is VizWiz's evaluation API's:
    the prediction normalized, the ten human answers as given, leave-one-out (`vlmlab.metrics.vizwiz_accuracy`).
    An unanswerable question's humans answer "unanswerable", so a model must say so to score; the
    `vizwiz-llava` task asks with LLaVA-1.5's prompt ("When the provided information is insufficient, respond
    with 'Unanswerable'. ...")."""

    metric = "vizwiz_accuracy"
    splits = ("train", "val")

    def load(self, split: str, limit: int | None = None, path: str | None = None) -> list[VQAItem]:
        root = require_path(path, "vizwiz", LAYOUT)
        require_split(split, self.splits, "vizwiz")
        if not root.is_dir():
            raise DataError(f"{root}: VizWiz directory not found")
        file = root / f"{split}.json"
        records = read_json(file, "VizWiz annotations file")
        if not isinstance(records, list):
            raise DataError(f"{file}: expected a JSON list of questions")
        images = root / split

        def items():
            for index, record in enumerate(records):
                where = f"{file}[{index}]"
                image = field(record, "image", str, where)
                answers = tuple(
                    field(a, "answer", str, f"{where} answer {k}")
                    for k, a in enumerate(field(record, "answers", list, where))
                )
                if not answers:
                    raise DataError(f"{where}: no human answers")
                yield VQAItem(
                    item_id=f"{split}-{Path(image).stem}",
                    task="vizwiz",
                    category=field(record, "answer_type", str, where),
                    question=field(record, "question", str, where),
                    answer=max(set(answers), key=answers.count),  # the most common human answer trains
                    image=image_under(images, image, where),
                    answers=answers,
                    native_id=image,
                )

        return take(items(), limit, f"{file}: no questions")

    def llava_key(self, record: dict) -> str | None:
        """LLaVA's VizWiz question file names the image (VizWiz has one question per image)."""
        return record.get("image")
