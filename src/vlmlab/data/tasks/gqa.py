"""`gqa`: GQA balanced question files over the GQA images, exact match per structural type."""

from __future__ import annotations

from vlmlab.data.items import VQAItem
from vlmlab.data.tasks.base import Task
from vlmlab.data.tasks.local_files import field, image_under, read_json, require_path, require_split, take
from vlmlab.errors import DataError
from vlmlab.registry import register_task


@register_task("gqa")
class GQA(Task):
    """GQA balanced questions; category = structural type (verify, query, ...); GQA's own exact match.

    `path` is a directory holding `{split}_balanced_questions.json` (an object `{question id: {imageId,
    question, answer, types: {structural, ...}, ...}}`) and `images/{imageId}.jpg`. The category is
    `types.structural` (verify, query, choose, logical, compare); the score is GQA's: the prediction with
    trailing periods stripped and lower-cased equals the answer (`vlmlab.metrics.gqa_match`)."""

    metric = "gqa_exact"
    splits = ("train", "val", "testdev")

    def load(self, split: str, limit: int | None = None, path: str | None = None) -> list[VQAItem]:
        root = require_path(path, "gqa", "a directory holding <split>_balanced_questions.json and images/")
        require_split(split, self.splits, "gqa")
        if not root.is_dir():
            raise DataError(f"{root}: GQA directory not found")
        file = root / f"{split}_balanced_questions.json"
        questions = read_json(file, "GQA questions file")
        if not isinstance(questions, dict):
            raise DataError(f"{file}: expected a JSON object of questions keyed by question id")
        images = root / "images"

        def items():
            for question_id, record in questions.items():
                where = f"{file}[question {question_id!r}]"
                image_id = field(record, "imageId", (str, int), where)
                yield VQAItem(
                    item_id=f"{split}-{question_id}",
                    task="gqa",
                    category=field(field(record, "types", dict, where), "structural", str, f"{where} types"),
                    question=field(record, "question", str, where),
                    answer=field(record, "answer", str, where),
                    image=image_under(images, f"{image_id}.jpg", where),
                    native_id=str(question_id),
                )

        return take(items(), limit, f"{file}: no questions")
