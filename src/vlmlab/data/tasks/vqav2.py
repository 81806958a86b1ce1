"""`vqav2`: the official VQAv2 question and annotation files over COCO images, scored with VQA accuracy."""

from __future__ import annotations

from pathlib import Path

from vlmlab.data.items import VQAItem
from vlmlab.data.tasks.base import Task
from vlmlab.data.tasks.local_files import field, read_json, require_path, require_split, take
from vlmlab.errors import DataError
from vlmlab.registry import register_task

LAYOUT = "a directory holding the official VQAv2 files (see docs/datasets.md)"


def questions_file(root: Path, split: str) -> Path:
    return root / f"v2_OpenEnded_mscoco_{split}2014_questions.json"


def annotations_file(root: Path, split: str) -> Path:
    return root / f"v2_mscoco_{split}2014_annotations.json"


def image_file(root: Path, split: str, image_id: int) -> Path:
    return root / f"{split}2014" / f"COCO_{split}2014_{image_id:012d}.jpg"


@register_task("vqav2")
class VQAv2(Task):
    """VQAv2 (official question + annotation files over COCO); VQA accuracy against the ten human answers.

    `path` is a directory holding `v2_OpenEnded_mscoco_{split}2014_questions.json`,
    `v2_mscoco_{split}2014_annotations.json` and the images
    `{split}2014/COCO_{split}2014_{image_id:012d}.jpg`. The category is the annotation's answer_type
    (yes/no, number, other); the training answer is the multiple_choice_answer; the score is the official
    VQA accuracy against the ten human answers (GT-Vision-Lab/VQA vqaEval.py, 2021 version; the task YAML
    metric `vqa_accuracy_2016` selects the pre-2021 script). Questions without an annotation are skipped, as
    the official API does, and counted in metrics.json."""

    metric = "vqa_accuracy"
    splits = ("train", "val")

    def load(self, split: str, limit: int | None = None, path: str | None = None) -> list[VQAItem]:
        root = require_path(path, "vqav2", LAYOUT)
        require_split(split, self.splits, "vqav2")
        if not root.is_dir():
            raise DataError(f"{root}: VQAv2 directory not found")
        qfile, afile = questions_file(root, split), annotations_file(root, split)
        questions = field(read_json(qfile, "VQAv2 questions file"), "questions", list, str(qfile))
        if not afile.is_file():
            raise DataError(f"{afile}: VQAv2 annotations file not found (the answers are needed to train and score)")
        annotations = read_annotations(afile)

        def items():
            skipped = 0
            for index, question in enumerate(questions):
                where = f"{qfile}[question {index}]"
                question_id = field(question, "question_id", int, where)
                image_id = field(question, "image_id", int, where)
                if question_id not in annotations:  # the official API keys on the annotations and ignores these
                    skipped += 1
                    self.notes["skipped_without_annotation"] = skipped
                    continue
                category, answer, answers = annotations[question_id]
                yield VQAItem(
                    item_id=f"{split}-{question_id}",
                    task="vqav2",
                    category=category,
                    question=field(question, "question", str, where),
                    answer=answer,
                    image=str(image_file(root, split, image_id)),
                    answers=answers,
                    native_id=str(question_id),
                )

        return take(items(), limit, f"{qfile}: no questions")


def read_annotations(file: Path) -> dict[int, tuple[str, str, tuple[str, ...]]]:
    """{question_id: (answer_type, multiple_choice_answer, the human answers)} of an annotations file."""
    annotations = field(read_json(file, "VQAv2 annotations file"), "annotations", list, str(file))
    out = {}
    for index, annotation in enumerate(annotations):
        where = f"{file}[annotation {index}]"
        humans = field(annotation, "answers", list, where)
        answers = tuple(field(human, "answer", str, f"{where} answer {k}") for k, human in enumerate(humans))
        if not answers:
            raise DataError(f"{where}: no human answers")
        out[field(annotation, "question_id", int, where)] = (
            field(annotation, "answer_type", str, where),
            field(annotation, "multiple_choice_answer", str, where),
            answers,
        )
    return out
