"""`refcoco`: RefCOCO / RefCOCO+ / RefCOCOg referring expressions (JSON exports, no pickles) as box answers."""

from __future__ import annotations

import pickle
from io import BytesIO
from pathlib import Path
from typing import Any

from vlmlab.data.images import format_box, project_box
from vlmlab.data.items import VQAItem
from vlmlab.data.tasks.base import Task
from vlmlab.data.tasks.local_files import field, image_under, read_json, require_path, require_split, take
from vlmlab.errors import DataError
from vlmlab.registry import register_task

PROMPT = "Give the box of: {expression}"  # the question of every item; a task YAML may re-prompt


@register_task("refcoco")
class RefCOCO(Task):
    """RefCOCO / RefCOCO+ / RefCOCOg referring expressions; box answers, Acc@IoU>=0.5 in original-image pixels.

    The refer-toolkit layout: `path` is a directory holding the refs — `refs.json` (a list of `{ref_id,
    ann_id, image_id, split, sentences: [{sent}]}`) or the toolkit's own `refs(unc).p` / `refs(umd).p` /
    `refs(google).p`, read through a loader that admits only plain containers, strings and numbers (no code
    runs) — plus `instances.json` (COCO `images` with id/file_name/width/height, `annotations` with id/bbox
    [x, y, w, h], optional `categories`) and `images/`. Splits follow the refer API: `test` is every split
    named test* (RefCOCO/+: testA ∪ testB), `testA` / `testB` those holding that letter. Each sentence is one
    item whose answer is the referred box; the category is the COCO category name (else `all`); the score
    maps the predicted box back to the original image's pixels and needs IoU >= 0.5 with the gold box."""

    answer_type = "box"
    metric = "box_iou@0.5"
    splits = ("train", "val", "test", "testA", "testB", "testC")

    def load(self, split: str, limit: int | None = None, path: str | None = None) -> list[VQAItem]:
        root = require_path(path, "refcoco", "a directory holding refs.json, instances.json and images/")
        require_split(split, self.splits, "refcoco")
        if not root.is_dir():
            raise DataError(f"{root}: RefCOCO directory not found")
        refs_file, refs = read_refs(root)
        images, boxes, categories = read_instances(root / "instances.json")
        present = set()  # the splits seen, for the message when `split` has no refs

        def items():
            for index, ref in enumerate(refs):
                where = f"{refs_file}[ref {index}]"
                present.add(field(ref, "split", str, where))
                if in_split(ref["split"], split):
                    yield from ref_items(ref, where, root / "images", images, boxes, categories, split)

        return take(
            items(),
            limit,
            lambda: f"{refs_file}: no refs in split {split!r} (present: {', '.join(sorted(present)) or 'none'})",
        )


def in_split(ref_split: str, split: str) -> bool:
    """The refer API's split rule: `test` takes every test* split, `testA`/`testB`/`testC` every split holding
    that letter (testAB too), others are compared as they are."""
    if split == "test":
        return "test" in ref_split
    if split in ("testA", "testB", "testC"):
        return split[-1] in ref_split
    return ref_split == split


def read_refs(root: Path) -> tuple[Path, list]:
    """(file, refs) from `refs.json`, else from the one refer-toolkit pickle in `root` (safely, see `load_pickle`)."""
    json_file = root / "refs.json"
    pickles = sorted(root.glob("refs*.p"))
    if json_file.is_file() or not pickles:
        if not json_file.is_file():
            raise DataError(f"{json_file}: not found (nor a refer-toolkit refs(unc).p / refs(umd).p in {root})")
        refs = read_json(json_file, "RefCOCO refs file")
    elif len(pickles) > 1:
        names = ", ".join(p.name for p in pickles)
        raise DataError(
            f"{root}: several refs pickles ({names}): keep the one you mean, or convert it with "
            "`vlmlab data convert-refs FILE.p DIR/refs.json`"
        )
    else:
        json_file, refs = pickles[0], load_pickle(pickles[0])
    if not isinstance(refs, list):
        raise DataError(f"{json_file}: expected a list of refs")
    return json_file, refs


class _PlainData(pickle.Unpickler):
    """An unpickler that builds only what pickle encodes without naming a class (dicts, lists, tuples, strings,
    numbers, booleans, None): any pickle that asks for a class or a function is refused before it runs."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it names {module}.{name}; refs pickles hold plain data only")


PICKLE_MAX_BYTES = 1 << 30  # refs(umd).p of RefCOCOg is ~50 MB
PICKLE_MAX_DEPTH = 32  # a ref nests 4 levels (list > ref > sentences > sentence)


def load_pickle(file: Path) -> Any:
    """A refer-toolkit refs pickle (`refs(unc).p`), read without running any code from it, then bounded before any
    conversion: pickle can share one object many times (memo references) or make it contain itself, so a
    700-byte file can stand for an exponentially large or cyclic tree. The tree as JSON would write it may hold
    at most 16 objects per byte of the file (the real files: about 1), nest at most PICKLE_MAX_DEPTH deep, and
    never contain itself."""
    try:
        size = file.stat().st_size
        if size > PICKLE_MAX_BYTES:
            raise DataError(f"{file}: larger than {PICKLE_MAX_BYTES >> 30} GiB (not a refs pickle)")
        data = file.read_bytes()
        value = _PlainData(BytesIO(data), encoding="utf-8").load()
    except DataError:
        raise
    except PermissionError:
        raise DataError(f"{file}: not readable (permission denied)") from None
    except (pickle.UnpicklingError, EOFError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{file}: not a plain-data refs pickle ({exc}); convert it with a tool you trust") from None
    except (IndexError, KeyError, MemoryError, RecursionError, OverflowError) as exc:
        raise DataError(f"{file}: not a readable pickle ({type(exc).__name__})") from None
    problem = _unbounded(value, budget=16 * len(data) + 1024, max_depth=PICKLE_MAX_DEPTH)
    if problem is not None:
        raise DataError(f"{file}: {problem}; refs pickles are plain trees of refs")
    return value


def _unbounded(value: Any, budget: int, max_depth: int) -> str | None:
    """Why the tree `value` stands for is too large, too deep or cyclic (None when it is a bounded tree): walked
    iteratively, counting a shared object again at every place it appears, stopping at the first excess."""
    count = 0
    stack: list[tuple[Any, int, tuple[int, ...]]] = [(value, 1, ())]
    while stack:
        node, depth, ancestors = stack.pop()
        count += 1
        if count > budget:
            return f"it expands to more than {budget:,} objects (shared references repeated)"
        if not isinstance(node, (list, tuple, dict, set, frozenset)):
            continue
        if id(node) in ancestors:
            return "an object contains itself (a cyclic reference)"
        if depth > max_depth:
            return f"nested deeper than {max_depth} levels"
        children = [v for kv in node.items() for v in kv] if isinstance(node, dict) else list(node)
        inner = (*ancestors, id(node))
        stack.extend((child, depth + 1, inner) for child in children)
    return None


def ref_items(
    ref: dict, where: str, image_dir: Path, images: dict, boxes: dict, categories: dict, split: str
) -> list[VQAItem]:
    """One item per sentence of a ref; the answer is the box relative to the original image (resize)."""
    ref_id = field(ref, "ref_id", (str, int), where)
    image_id = field(ref, "image_id", int, where)
    ann_id = field(ref, "ann_id", int, where)
    if image_id not in images:
        raise DataError(f"{where}: image_id {image_id} is not in instances.json")
    if ann_id not in boxes:
        raise DataError(f"{where}: ann_id {ann_id} is not in instances.json")
    file_name, width, height = images[image_id]
    box = boxes[ann_id]
    category_id = ref.get("category_id")
    category = categories.get(category_id, "all") if isinstance(category_id, int) else "all"
    image = image_under(image_dir, file_name, where)
    return [
        VQAItem(
            item_id=f"{split}-{ref_id}-{k}",
            task="refcoco",
            category=category,
            question=PROMPT.format(expression=field(sentence, "sent", str, f"{where} sentence {k}").strip()),
            answer=format_box(project_box(box, width, height, max(width, height), "resize")),
            image=image,
            box=box,
            image_size=(width, height),
        )
        for k, sentence in enumerate(field(ref, "sentences", list, where))
    ]


def read_instances(file: Path) -> tuple[dict, dict, dict]:
    """({image id: (file_name, width, height)}, {annotation id: (x1, y1, x2, y2)}, {category id: name})."""
    data = read_json(file, "COCO instances file")
    images, boxes, categories = {}, {}, {}
    for index, image in enumerate(field(data, "images", list, str(file))):
        where = f"{file}[image {index}]"
        width, height = field(image, "width", int, where), field(image, "height", int, where)
        if width <= 0 or height <= 0:
            raise DataError(f"{where}: width and height must be positive")
        images[field(image, "id", int, where)] = (field(image, "file_name", str, where), width, height)
    for index, annotation in enumerate(field(data, "annotations", list, str(file))):
        where = f"{file}[annotation {index}]"
        bbox = field(annotation, "bbox", list, where)
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            raise DataError(f"{where}: bbox must be 4 numbers [x, y, width, height]")
        x, y, w, h = (float(v) for v in bbox)
        boxes[field(annotation, "id", int, where)] = (x, y, x + w, y + h)
    listed = field(data, "categories", list, str(file)) if "categories" in data else []
    for index, category in enumerate(listed):
        where = f"{file}[category {index}]"
        categories[field(category, "id", int, where)] = field(category, "name", str, where)
    return images, boxes, categories
