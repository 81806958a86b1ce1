"""`vlmlab data check`: load a dataset and decode every image before a long job does; every bad image (and every
text-only record with nothing to learn) is listed."""

from __future__ import annotations

from collections import Counter
from typing import Any

from vlmlab.config import DataSource, ImageConfig
from vlmlab.data.images import load_image
from vlmlab.data.items import VQAItem
from vlmlab.data.sources import load_source
from vlmlab.errors import DataError, printable
from vlmlab.progress import progress


def check_dataset(source: DataSource, image: ImageConfig | None = None) -> dict[str, Any]:
    """Items per category, distinct images and their sizes. A bad record is a DataError naming it; every image
    is decoded, each bad one is printed as it is found, and then one DataError counts them and names the first
    (what a run would meet with `data.on_bad_image: stop`). A text-only record (LLaVA's ShareGPT part) has no
    image to decode: its text is checked instead (an assistant turn to learn from, no NUL bytes)."""
    _, items = load_source(source, "data", image)
    declared = {item.image: item for item in items if item.image_size is not None}  # boxes are measured in it
    images = list(dict.fromkeys(item.image for item in items if item.image is not None))
    text_only = [item for item in items if item.image is None]
    sizes: Counter = Counter()
    bad: list[str] = []

    def finding(message: str) -> None:
        bad.append(message)
        print(f"bad {printable(message)}", flush=True)  # the command's findings, on stdout; the error is one line

    for item in text_only:
        problem = text_problem(item)
        if problem is not None:
            finding(f"record: {item.task}/{item.item_id} (text-only): {problem}")
    with progress() as bar:
        job = bar.add_task(f"decoding {len(images)} images", total=len(images), info="")
        for path in images:
            bar.advance(job)
            try:
                size = load_image(path).size
            except DataError as exc:
                finding(f"image: {exc}")
                continue
            if path in declared and tuple(declared[path].image_size) != size:
                item = declared[path]
                finding(
                    f"image: {path}: is {size[0]}x{size[1]} but item {item.item_id} measures its box in "
                    f"{item.image_size[0]}x{item.image_size[1]} (the box would land in the wrong place)"
                )
                continue
            sizes[size] += 1
    if bad:
        more = f"; {len(bad) - 1} more listed above" if len(bad) > 1 else ""
        what = f"{len(images)} images" + (f" and {len(text_only)} text-only records" if text_only else "")
        raise DataError(f"{len(bad)} of {what} cannot be used: {bad[0].split(': ', 1)[1]}{more}")
    return {
        "items": len(items),
        "text_only": len(text_only),
        "categories": dict(sorted(Counter(item.category for item in items).items())),
        "answer_types": dict(Counter("box" if item.box is not None else "text" for item in items)),
        "images": len(images),
        "image_sizes": {f"{w}x{h}": n for (w, h), n in sizes.most_common(5)},
    }


def text_problem(item: VQAItem) -> str | None:
    """Why a text-only record teaches nothing or is not text (every assistant turn empty, a NUL byte), or None."""
    turns = item.turns
    if not any(answer.strip() for _, answer in turns):
        return "every assistant turn is empty (it would teach only the stop token)"
    for t, (question, answer) in enumerate(turns):
        if "\x00" in question or "\x00" in answer:
            return f"turn {t} holds a NUL byte (binary data, not text)"
    return None
