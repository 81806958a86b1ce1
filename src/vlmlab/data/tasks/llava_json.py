"""`llava-json`: LLaVA conversation data (`llava_v1_5_mix665k.json` style), one item per question/answer turn."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from vlmlab.data.items import VQAItem
from vlmlab.data.tasks.base import Task
from vlmlab.data.tasks.local_files import field, image_under, read_json, require_path, take
from vlmlab.errors import DataError
from vlmlab.registry import register_task

IMAGE_TAG = "<image>"  # LLaVA's placeholder in the text; vlmlab's prompt format inserts its own


@register_task("llava-json")
class LlavaJson(Task):
    """LLaVA conversation JSON (llava_v1_5_mix665k style): one item per human/gpt turn pair.

    `path` is the JSON file (a list of `{id, image, conversations}`), or a directory holding `<split>.json`.
    Images are relative to the JSON file's directory and may not leave it. Every human -> gpt turn pair is
    one item (later turns lose the earlier ones as context); the category is the image path's first folder
    (`coco`, `gqa`, ... in mix665k), else `all`. Records without an image (text-only) are skipped and
    counted in `skipped`."""

    splits = ("train", "val", "test")
    skipped = 0

    def load(self, split: str, limit: int | None = None, path: str | None = None) -> list[VQAItem]:
        file = require_path(path, "llava-json", "a LLaVA .json file or a directory holding <split>.json")
        if file.is_dir():
            file = file / f"{split}.json"
        records = read_json(file, "LLaVA data file")
        if not isinstance(records, list):
            raise DataError(f"{file}: expected a JSON list of conversation records")
        seen: set[str] = set()
        self.skipped = 0

        def items():
            for index, record in enumerate(records):
                where = f"{file}[record {index}]"
                if isinstance(record, dict) and record.get("image") is None:
                    self.skipped += 1
                    continue
                yield from record_items(record, where, file.parent, index, seen)

        return take(items(), limit, f"{file}: no records with an image")


def record_items(record: dict, where: str, root: Path, index: int, seen: set[str]) -> list[VQAItem]:
    """One item per human -> gpt pair of one record; ids are `{id}-{pair}` (`{id}@{index}-{pair}` for a repeated id)."""
    record_id = str(field(record, "id", (str, int), where))
    if record_id in seen:
        record_id = f"{record_id}@{index}"
    seen.add(record_id)
    name = field(record, "image", str, where)
    image = image_under(root, name, where)
    folders = PurePosixPath(name.replace("\\", "/")).parts[:-1]
    category = folders[0] if folders else "all"
    return [
        VQAItem(
            item_id=f"{record_id}-{pair}",
            task="llava-json",
            category=category,
            question=question.replace(IMAGE_TAG, "").strip(),
            answer=answer.strip(),
            image=image,
        )
        for pair, (question, answer) in enumerate(turn_pairs(record, where))
    ]


def turn_pairs(record: dict, where: str) -> list[tuple[str, str]]:
    """The (human, gpt) text pairs of a record's `conversations`; anything else is a DataError."""
    turns = field(record, "conversations", list, where)
    if not turns or len(turns) % 2:
        raise DataError(f"{where}: conversations must be human/gpt turn pairs, got {len(turns)} turns")
    pairs = []
    for t in range(0, len(turns), 2):
        question = _turn_text(turns[t], "human", f"{where} turn {t}")
        answer = _turn_text(turns[t + 1], "gpt", f"{where} turn {t + 1}")
        pairs.append((question, answer))
    return pairs


def _turn_text(turn: object, role: str, where: str) -> str:
    speaker = field(turn, "from", str, where)
    if speaker != role:
        raise DataError(f"{where}: expected a {role!r} turn, got {speaker!r}")
    return field(turn, "value", str, where)
