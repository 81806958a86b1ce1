"""Which vlmlab item a harness row answers: from the benchmark's own ids the row carries (its `doc`, its per-item
metric payloads, its table columns), from the harness's dataset rows (`--docs`), or from an index map. A row is
mapped only to an item whose id those fields determine, and only if its question (and, where the harness keeps
it, its gold answer) agrees with the item's; anything else is counted and named, never guessed.

Item ids per format (docs/datasets.md): vqav2, gqa, textvqa `{split}-{question id}`; vizwiz `{split}-{image
stem}`; pope `{variant}-{question id}`; refcoco `{split}-{ref id}-{sentence index}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmlab.data.images import project_box
from vlmlab.data.items import VQAItem
from vlmlab.data.tasks.declarative import DeclarativeTask
from vlmlab.errors import DataError
from vlmlab.evaluation.harness_formats import HarnessRow
from vlmlab.metrics import parse_box
from vlmlab.registry import TASKS

SHOWN = 5  # rows named in a message
POPE_TASKS = {"pope_random": "random", "pope_pop": "popular", "pope_adv": "adversarial"}
POPE_VARIANTS = ("random", "popular", "adversarial")
_LMMS_TASKS = [  # lmms-eval task name -> (vlmlab format, split)
    (re.compile(r"vqav2_val(_lite)?"), "vqav2", "val"),
    (re.compile(r"gqa(_lite)?"), "gqa", "testdev"),
    (re.compile(r"pope(_random|_pop|_adv)?"), "pope", "test"),
    (re.compile(r"textvqa_val(_lite)?"), "textvqa", "val"),
    (re.compile(r"vizwiz_vqa_val(_lite)?"), "vizwiz", "val"),
    (re.compile(r"refcoco[+g]?_bbox_rec_(val|test|testA|testB)(_lite)?"), "refcoco", None),
]


def task_format(task) -> str:
    """The registered format a task reads (a task YAML's `format`, else the task's own id; `textvqa-ocr` is
    TextVQA)."""
    cls = type(task.format) if isinstance(task, DeclarativeTask) else type(task)
    name = next((i for i, c in TASKS.items() if c is cls), "")
    return "textvqa" if name.startswith("textvqa") else name


def lmms_eval_expectation(name: str) -> tuple[str, str] | None:
    """(vlmlab format, split) of the lmms-eval tasks vlmlab reads; None for another task."""
    for pattern, fmt, split in _LMMS_TASKS:
        m = pattern.fullmatch(name)
        if m:
            return fmt, split or m.group(1)
    return None


@dataclass
class Mapped:
    """Rows mapped to items: {item_id: answer text}, and the rows that were not, with why."""

    answers: dict[str, str] = field(default_factory=dict)
    unmapped: list[tuple[str, str]] = field(default_factory=list)  # (row key, reason)
    rows: int = 0

    def report(self, n_items: int) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "mapped": len(self.answers),
            "unmapped": len(self.unmapped),
            "unmapped_first": [f"{k}: {why}" for k, why in self.unmapped[:SHOWN]],
            "items_without_answer": n_items - len(self.answers),
        }


def _first_line(text: str) -> str:
    return " ".join(text.strip().split("\n", 1)[0].lower().split())


def same_question(harness: str | None, item: VQAItem) -> bool:
    """The question the harness asked is the item's: the first lines agree, one holding the other (prompts
    around the question differ between harnesses; the question itself does not)."""
    if not harness:
        return True
    a, b = _first_line(harness), _first_line(item.question)
    return bool(a) and (a in b or b in a)


class _Rules:
    """Per vlmlab format: the item id a row's fields name, the text that must match the item's question, the gold
    answer check, and the answer as vlmlab scores it."""

    def __init__(self, fmt: str, split: str, harness_task: str | None, source_path: str | None):
        self.fmt, self.split, self.harness_task = fmt, split, harness_task
        self._refs: dict | None = None
        self._source_path = source_path
        self._used: dict[tuple, int] = {}

    def item_id(self, f: dict[str, Any]) -> tuple[str | None, str]:
        """(item id, '') or (None, why not)."""
        if self.fmt in ("vqav2", "textvqa", "gqa"):
            qid = f.get("question_id", f.get("id") if self.fmt == "gqa" else None)
            return (f"{self.split}-{qid}", "") if qid is not None else (None, "no question_id in the row")
        if self.fmt == "vizwiz":
            name = next((f[k] for k in ("image", "image_path", "question_id") if isinstance(f.get(k), str)), None)
            return (f"{self.split}-{Path(name).stem}", "") if name else (None, "no image name in the row")
        if self.fmt == "pope":
            return self._pope(f)
        if self.fmt == "refcoco":
            return self._refcoco(f)
        return None, f"{self.fmt} rows carry no benchmark id vlmlab knows; give an index map"

    def _pope(self, f: dict[str, Any]) -> tuple[str | None, str]:
        if f.get("question_id") is None:
            return None, "no question_id in the row"
        category = str(f.get("category") or "").strip()
        variant = category or POPE_TASKS.get(self.harness_task or "")
        if variant and "," in variant:
            return None, f"answers several POPE variants at once ({variant}); give an index map"
        if variant not in POPE_VARIANTS:
            return None, "no POPE variant (category) in the row; give --docs or an index map"
        return f"{variant}-{f['question_id']}", ""

    def _refcoco(self, f: dict[str, Any]) -> tuple[str | None, str]:
        ann, sentence = f.get("ann_id", f.get("question_id")), f.get("answer")
        if ann is None or not isinstance(sentence, str):
            return None, "no ann_id and expression in the row"
        refs = self._refs if self._refs is not None else self._load_refs()
        key = (str(ann), " ".join(sentence.split()))
        slots = refs.get(key)
        if not slots:
            return None, f"no ref of annotation {ann} in split {self.split} says {sentence!r}"
        used = self._used.get(key, 0)  # a ref that repeats a sentence: its copies in order (same image, same box)
        self._used[key] = used + 1
        return (slots[used], "") if used < len(slots) else (None, "answers the same expression twice")

    def _load_refs(self) -> dict:
        from vlmlab.data.tasks.refcoco import in_split, read_refs

        _, refs = read_refs(Path(self._source_path or "."))
        out: dict[tuple[str, str], list[str]] = {}
        for ref in refs:
            if not isinstance(ref, dict) or not in_split(str(ref.get("split")), self.split):
                continue
            for k, sentence in enumerate(ref.get("sentences") or []):
                text = " ".join(str((sentence or {}).get("sent", "")).split())
                out.setdefault((str(ref.get("ann_id")), text), []).append(f"{self.split}-{ref.get('ref_id')}-{k}")
        self._refs = out
        return out

    def gold_agrees(self, row: HarnessRow, item: VQAItem) -> str:
        """'' when the row's gold answer (where the harness keeps a comparable one) is the item's, else why not."""
        if self.fmt == "refcoco":
            box = row.fields.get("bbox")
            if isinstance(box, list) and len(box) == 4 and item.box is not None and item.image_size is not None:
                w, h = item.image_size
                mine = [item.box[0] / w, item.box[1] / h, item.box[2] / w, item.box[3] / h]
                if max(abs(float(a) - b) for a, b in zip(box, mine)) > 1e-3:
                    return "its gold box differs from the item's"
            return ""
        if row.target is None or self.fmt not in ("pope", "gqa"):
            return ""  # VQAv2/TextVQA/VizWiz: the harness's target is one of ten answers, in its own spelling
        if row.target.strip().lower() != item.answer.strip().lower():
            return f"its gold answer {row.target!r} is not the item's {item.answer!r}"
        return ""

    def question_text(self, row: HarnessRow) -> str | None:
        return row.fields.get("answer") if self.fmt == "refcoco" else row.question

    def answer(self, prediction: str, item: VQAItem, harness: str) -> str:
        """lmms-eval's refcoco_bbox_rec asks for [x1, y1, x2, y2] in 0-1 of the original image: that box, as the
        0-99 box of the processed image the item is scored in (exact floats, so the pixel IoU is lmms-eval's)."""
        if self.fmt != "refcoco" or harness != "lmms-eval" or item.frame is None or item.image_size is None:
            return prediction
        box = parse_box(prediction)
        if box is None:
            return prediction  # no box: a format error, scored 0 as lmms-eval scores it
        w, h = item.image_size
        units = project_box([box[0] * w, box[1] * h, box[2] * w, box[3] * h], w, h, *item.frame)
        return "[" + ", ".join(repr(v * 99 / 100) for v in units) + "]"


def map_rows(
    rows: list[HarnessRow],
    items: list[VQAItem],
    fmt: str,
    split: str,
    harness: str,
    harness_task: str | None = None,
    index_map: dict[str, str] | None = None,
    docs: list[dict[str, Any]] | None = None,
    source_path: str | None = None,
) -> Mapped:
    """Map every row to at most one item (see the module docstring); `docs[i]` is the dataset row of doc_id i."""
    by_id = {item.item_id: item for item in items}
    rules = _Rules(fmt, split, harness_task, source_path)
    mapped, first_row = Mapped(rows=len(rows)), {}
    for row in rows:
        if row.prediction is None:
            mapped.unmapped.append((row.key, row.problem or "no answer"))
            continue
        fields = dict(row.fields)
        if docs is not None:
            i = int(row.value) if row.value.isdigit() else -1
            if not 0 <= i < len(docs):
                mapped.unmapped.append((row.key, f"no row {row.value} in the docs ({len(docs)} rows)"))
                continue
            fields = {**docs[i], **fields}
        if index_map is not None and row.value in index_map:
            item_id, why = index_map[row.value], ""
        elif isinstance(fields.get("item_id"), str):
            item_id, why = fields["item_id"], ""
        elif index_map is not None:
            item_id, why = None, "not in the index map"
        else:
            item_id, why = rules.item_id(fields)
        if item_id is None:
            mapped.unmapped.append((row.key, why))
            continue
        item = by_id.get(item_id)
        if item is None:
            mapped.unmapped.append((row.key, f"names item {item_id}, which {fmt}:{split} does not have here"))
            continue
        problem = "" if same_question(rules.question_text(row), item) else "its question is not the item's"
        problem = problem or rules.gold_agrees(row, item)
        if not problem and item_id in first_row:
            problem = f"answers item {item_id} again (first: {first_row[item_id]})"
        if problem:
            mapped.unmapped.append((row.key, f"{problem} (item {item_id})"))
            continue
        first_row[item_id] = row.key
        mapped.answers[item_id] = rules.answer(row.prediction, item, harness)
    if rows and not mapped.answers:
        shown = "; ".join(f"{k}: {why}" for k, why in mapped.unmapped[:SHOWN])
        raise DataError(f"none of the {len(rows)} rows could be mapped to {fmt}:{split} items ({shown})")
    return mapped
