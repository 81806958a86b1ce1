"""`pope`: the POPE object-hallucination probe (yes/no questions over COCO val2014, three sampling variants)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from vlmlab.data.items import VQAItem
from vlmlab.data.tasks.base import Task
from vlmlab.data.tasks.local_files import field, image_under, require_path, require_split, take
from vlmlab.data.tasks.vqa_jsonl import json_records
from vlmlab.errors import DataError
from vlmlab.registry import register_task

VARIANTS = ("random", "popular", "adversarial")
IMAGE_DIR = "val2014"
LABELS = ("yes", "no")


def variant_file(root: Path, variant: str) -> Path:
    return root / f"coco_pope_{variant}.json"


@register_task("pope")
class POPE(Task):
    """POPE object hallucination: yes/no questions in random / popular / adversarial variants; exact match.

    `path` is a directory holding `coco_pope_{random,popular,adversarial}.json` (JSON lines `{question_id,
    image, text, label}` despite the suffix; the ones present are read) and the COCO images in `val2014/`;
    or one such file, with `val2014/` beside it. The category is the variant; the score is exact match on
    yes/no (see vlmlab.metrics.yes_no_f1 for precision/recall/F1)."""

    answer_type = "yes-no"
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


def variant_items(file: Path) -> Iterator[VQAItem]:
    """The questions of one POPE file, lazily; the variant is the last `_` part of its name (else `all`).
    A file without records is a DataError once it is reached."""
    variant = file.stem.rsplit("_", 1)[-1]
    variant = variant if variant in VARIANTS else "all"
    images = file.parent / IMAGE_DIR
    n = 0
    for where, record in json_records(file):
        label = field(record, "label", str, where).strip().lower()
        if label not in LABELS:
            raise DataError(f"{where}: label must be yes or no, got {record['label']!r}")
        n += 1
        yield VQAItem(
            item_id=f"{variant}-{field(record, 'question_id', (str, int), where)}",
            task="pope",
            category=variant,
            question=field(record, "text", str, where),
            answer=label,
            image=image_under(images, field(record, "image", str, where), where),
        )
    if not n:
        raise DataError(f"{file}: no records")
