"""`pope`: the POPE object-hallucination probe (yes/no questions over COCO val2014, three sampling variants)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from vlmlab.data.items import VQAItem
from vlmlab.data.tasks.base import Task
from vlmlab.data.tasks.local_files import field, image_under, read_json, require_path, require_split, take
from vlmlab.data.tasks.vqa_jsonl import json_records
from vlmlab.errors import DataError
from vlmlab.metrics import pope_summary
from vlmlab.registry import register_task

VARIANTS = ("random", "popular", "adversarial")
IMAGE_DIR = "val2014"
LABELS = ("yes", "no")


def variant_file(root: Path, variant: str) -> Path:
    return root / f"coco_pope_{variant}.json"


@register_task("pope")
class POPE(Task):
    """POPE object hallucination: yes/no questions in random / popular / adversarial variants; POPE's own rule.

    `path` is a directory holding `coco_pope_{random,popular,adversarial}.json` (JSON lines `{question_id,
    image, text, label}` despite the suffix, or one JSON array of such records; the ones present are read)
    and the COCO images in `val2014/`; or one such file, with `val2014/` beside it. The category is the
    variant. The score reads the answer as POPE's evaluate.py does (`vlmlab.metrics.pope_answer`: "no" when
    the first sentence has the word no/not/No) and compares it with the label; metrics.json and the study
    summary add accuracy, precision, recall, F1 and the yes ratio per variant."""

    answer_type = "yes-no"
    metric = "pope_yes_no"
    splits = ("test",)

    def load(self, split: str, limit: int | None = None, path: str | None = None) -> list[VQAItem]:
        target = require_path(path, "pope", "a directory holding coco_pope_<variant>.json files and val2014/")
        require_split(split, self.splits, "pope")
        if target.is_dir():
            files = [variant_file(target, v) for v in VARIANTS if variant_file(target, v).is_file()]
            if not files:
                raise DataError(f"{target}: no POPE files (expected coco_pope_{{{','.join(VARIANTS)}}}.json)")
        elif target.is_file():
            files = [target]
        else:
            raise DataError(f"{target}: POPE file or directory not found")
        return take(itertools.chain.from_iterable(variant_items(f) for f in files), limit, f"{target}: no records")

    def summary(self, predictions: list[str], answers: list[str]) -> dict[str, float]:
        return pope_summary(predictions, answers)

    def llava_key(self, record: dict) -> str | None:
        """LLaVA's llava_pope_test.jsonl names the variant in `category`; question ids restart per variant."""
        return f"{record.get('category', 'all')}/{record['question_id']}" if "question_id" in record else None


def variant_items(file: Path) -> Iterator[VQAItem]:
    """The questions of one POPE file, lazily; the variant is the last `_` part of its name (else `all`).
    A file without records is a DataError once it is reached."""
    variant = file.stem.rsplit("_", 1)[-1]
    variant = variant if variant in VARIANTS else "all"
    images = file.parent / IMAGE_DIR
    n = 0
    for where, record in pope_records(file):
        label = field(record, "label", str, where).strip().lower()
        if label not in LABELS:
            raise DataError(f"{where}: label must be yes or no, got {record['label']!r}")
        n += 1
        question_id = field(record, "question_id", (str, int), where)
        yield VQAItem(
            item_id=f"{variant}-{question_id}",
            task="pope",
            category=variant,
            question=field(record, "text", str, where),
            answer=label,
            image=image_under(images, field(record, "image", str, where), where),
            native_id=f"{variant}/{question_id}",
        )
    if not n:
        raise DataError(f"{file}: no records")


def pope_records(file: Path) -> Iterator[tuple[str, dict]]:
    """(where, record) of a POPE file: JSON lines (the released files), or one JSON array of records (the
    SEEM-based and later files); a bad file or record is a DataError naming it."""
    with open(file, encoding="utf-8") as fh:
        head = fh.read(1024).lstrip()
    if not head.startswith("["):
        yield from json_records(file)
        return
    records = read_json(file, "POPE file")
    for index, record in enumerate(records):
        where = f"{file}[{index}]"
        if not isinstance(record, dict):
            raise DataError(f"{where}: a record must be a JSON object")
        yield where, record
