"""`llava-json`: LLaVA conversation data (`llava_v1_5_mix665k.json` style), one training sample per record."""

from __future__ import annotations

from pathlib import Path

from vlmlab.data.items import VQAItem
from vlmlab.data.tasks.base import Task
from vlmlab.data.tasks.local_files import field, image_under, read_json, require_path, take
from vlmlab.errors import DataError
from vlmlab.registry import register_task

IMAGE_TAG = "<image>"  # LLaVA's placeholder in the text; vlmlab's prompt format inserts its own


@register_task("llava-json")
class LlavaJson(Task):
    """LLaVA conversation JSON (llava_v1_5_mix665k style): one item per record, its whole conversation.

    `path` is the JSON file (a list of `{id, image?, conversations}`), or a directory holding `<split>.json`.
    Images are relative to the JSON file's directory and may not leave it. A record is one training sample, as
    in LLaVA: every assistant turn is supervised with the earlier turns as context. `<image>` may open or
    close the first human turn (both occur in mix665k); a record without `image` is text-only (the ShareGPT
    part, ~6% of mix665k) and trains without vision tokens. The category is the image path's first folder
    (`coco`, `gqa`, ... in mix665k), `text` for text-only records, else `all`. `question`/`answer` are the first
    turn's (what an evaluation of this file would ask)."""

    splits = ("train", "val", "test")
    image_position_from_data = True  # `<image>` opens or closes each record's first turn
    overlong_prompts = "cut"  # long ShareGPT turns: evaluation keeps the head of the question that fits

    def load(self, split: str, limit: int | None = None, path: str | None = None) -> list[VQAItem]:
        file = require_path(path, "llava-json", "a LLaVA .json file or a directory holding <split>.json")
        if file.is_dir():
            file = file / f"{split}.json"
        records = read_json(file, "LLaVA data file")
        if not isinstance(records, list):
            raise DataError(f"{file}: expected a JSON list of conversation records")
        seen: set[str] = set()
        items = (record_item(r, f"{file}[record {i}]", file.parent, i, seen) for i, r in enumerate(records))
        return take(items, limit, f"{file}: no records")


def record_item(record: object, where: str, root: Path, index: int, seen: set[str]) -> VQAItem:
    """The sample of one record; its id is the record's (`{id}@{index}` for a repeated id)."""
    record_id = str(field(record, "id", (str, int), where))
    if record_id in seen:
        record_id = f"{record_id}@{index}"
    seen.add(record_id)
    turns = turn_pairs(record, where)
    name = record.get("image")
    if name is None:
        if any(IMAGE_TAG in q for q, _ in turns):
            raise DataError(f"{where}: a text-only record (no image) has an {IMAGE_TAG} tag")
        image, category, at_end = None, "text", False
    else:
        if not isinstance(name, str):
            raise DataError(f"{where}: field 'image' must be a string path")
        image = image_under(root, name, where)
        folders = [part for part in name.replace("\\", "/").split("/")[:-1] if part not in ("", ".")]
        category = folders[0] if folders else "all"
        first = turns[0][0].strip()
        at_end = first.endswith(IMAGE_TAG) and not first.startswith(IMAGE_TAG)
        if any(IMAGE_TAG in q for q, _ in turns[1:]):
            raise DataError(f"{where}: {IMAGE_TAG} may appear only in the first human turn")
    turns = [(q.replace(IMAGE_TAG, "").strip(), a.strip()) for q, a in turns]
    return VQAItem(
        item_id=record_id,
        task="llava-json",
        category=category,
        question=turns[0][0],
        answer=turns[0][1],
        image=image,
        conversation=tuple(turns) if len(turns) > 1 else (),
        image_at_end=at_end,
    )


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
