"""`vqa-jsonl`: a local VQA set as JSON lines `{id, image, question, answer, category?}`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vlmlab import bounded
from vlmlab.data.items import VQAItem
from vlmlab.data.tasks.base import Task
from vlmlab.data.tasks.local_files import image_under, take
from vlmlab.errors import ConfigError, DataError, UserError
from vlmlab.registry import register_task

REQUIRED = ("id", "image", "question", "answer")


@register_task("vqa-jsonl")
class VQAJsonl(Task):
    """Your own VQA data: `path` is a .jsonl file (or a dir holding `<split>.jsonl`); image paths are
    relative to the file's directory and may not leave it."""

    splits = ("train", "val", "test")

    def load(self, split: str, limit: int | None = None, path: str | None = None) -> list[VQAItem]:
        if path is None:
            raise ConfigError("path", "vqa-jsonl needs a path to a .jsonl file or a directory of <split>.jsonl")
        file = Path(path)
        if file.is_dir():
            file = file / f"{split}.jsonl"
        return read_items(file, split, limit, task="vqa-jsonl")


def json_records(file: Path) -> Iterator[tuple[str, dict]]:
    """(`file:line`, record) for each non-blank line (lines end at `\\n` only; bounded, `vlmlab.bounded`); bad JSON,
    a non-object, bytes that are not UTF-8 or an unreadable file is a DataError naming the file (and line)."""
    try:
        for lineno, rec in bounded.jsonl_records(file):
            where = f"{file}:{lineno}"
            if not isinstance(rec, dict):
                raise DataError(f"{where}: a record must be a JSON object")
            yield where, rec
    except DataError:
        raise
    except UserError as exc:
        raise DataError(str(exc)) from None


def read_items(file: Path, split: str, limit: int | None, task: str) -> list[VQAItem]:
    """The VQA records of one .jsonl file (at most `limit`); a missing or empty file is a DataError."""
    if not file.is_file():
        raise DataError(f"{file}: data file not found")
    root = file.parent.resolve()
    first_seen: dict[str, str] = {}

    def items():
        for where, rec in json_records(file):
            item = _parse(rec, where, root, split, task)
            if item.item_id in first_seen:  # per-item records are joined on the id: it must be unique
                raise DataError(f"{where}: duplicate id {rec['id']!r} (first at {first_seen[item.item_id]})")
            first_seen[item.item_id] = where
            yield item

    return take(items(), limit, f"{file}: no records")


def _parse(rec: dict, where: str, root: Path, split: str, task: str) -> VQAItem:
    for key in REQUIRED:
        if key not in rec:
            raise DataError(f"{where}: missing field {key!r}")
        if not isinstance(rec[key], (str, int)) or isinstance(rec[key], bool):
            raise DataError(f"{where}: field {key!r} must be a string")
    image = image_under(root, str(rec["image"]), where, "dataset directory")
    return VQAItem(
        item_id=f"{split}-{rec['id']}",
        task=task,
        category=str(rec.get("category", "all")),
        question=str(rec["question"]),
        answer=str(rec["answer"]),
        image=image,
    )
