"""LLaVA-1.5's evaluation layout: a question `.jsonl` whose `text` is the exact prompt LLaVA asked.

`data.eval.N.prompts: FILE` makes every item of the source ask the `text` of its record in FILE (matched
by the benchmark's own question id, `Task.llava_key`), so an imported LLaVA checkpoint is evaluated with
LLaVA's own prompts while the answers and the scoring come from the benchmark's official files.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vlmlab.data.items import VQAItem
from vlmlab.data.tasks.base import Task
from vlmlab.data.tasks.vqa_jsonl import json_records
from vlmlab.errors import DataError

IMAGE_PLACEHOLDER = "<image>"  # vlmlab places the image itself (LLaVA's loader adds it before the text too)
SHOWN = 5


def llava_prompts(task: Task, file: Path) -> dict[str, str]:
    """{native id: prompt text} of a LLaVA question file."""
    if not file.is_file():
        raise DataError(f"{file}: LLaVA question file not found")
    prompts = {}
    for where, record in json_records(file):
        key, text = task.llava_key(record), record.get("text")
        if key is None or not isinstance(text, str):
            raise DataError(f"{where}: a LLaVA question record needs question_id and text")
        prompts[key] = text.replace(IMAGE_PLACEHOLDER + "\n", "").replace(IMAGE_PLACEHOLDER, "").strip()
    return prompts


def apply_llava_prompts(task: Task, items: list[VQAItem], file: Path, key: str) -> list[VQAItem]:
    """The items asking LLaVA's prompts; an item the file has no prompt for is a DataError naming the count."""
    prompts = llava_prompts(task, file)
    missing = [item.item_id for item in items if item.native_id not in prompts]
    if missing:
        shown = ", ".join(missing[:SHOWN]) + (", ..." if len(missing) > SHOWN else "")
        raise DataError(f"{file}: no prompt for {len(missing)} of {len(items)} items ({shown}) [{key}.prompts]")
    return [replace(item, question=prompts[item.native_id]) for item in items]
