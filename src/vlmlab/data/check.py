"""`vlmlab data check`: load a dataset and decode every image before a long job does; every bad image is listed."""

from __future__ import annotations

from collections import Counter
from typing import Any

from vlmlab.config import DataSource, ImageConfig
from vlmlab.data.images import load_image
from vlmlab.data.sources import load_source
from vlmlab.errors import DataError
from vlmlab.progress import progress


def check_dataset(source: DataSource, image: ImageConfig | None = None) -> dict[str, Any]:
    """Items per category, distinct images and their sizes. A bad record is a DataError naming it; every image
    is decoded, each bad one is printed as it is found, and then one DataError counts them and names the first
    (what a run would meet with `data.on_bad_image: stop`)."""
    _, items = load_source(source, "data", image)
    declared = {item.image: item for item in items if item.image_size is not None}  # boxes are measured in it
    images = list(dict.fromkeys(item.image for item in items))
    sizes: Counter = Counter()
    bad: list[str] = []
    with progress() as bar:
        job = bar.add_task(f"decoding {len(images)} images", total=len(images), info="")
        for path in images:
            bar.advance(job)
            try:
                size = load_image(path).size
            except DataError as exc:
                bad.append(str(exc))
                print(f"bad image: {exc}", flush=True)  # the command's findings, on stdout; the error is one line
                continue
            if path in declared and tuple(declared[path].image_size) != size:
                item = declared[path]
                bad.append(
                    f"{path}: is {size[0]}x{size[1]} but item {item.item_id} measures its box in "
                    f"{item.image_size[0]}x{item.image_size[1]} (the box would land in the wrong place)"
                )
                print(f"bad image: {bad[-1]}", flush=True)
                continue
            sizes[size] += 1
    if bad:
        more = f"; {len(bad) - 1} more listed above" if len(bad) > 1 else ""
        raise DataError(f"{len(bad)} of {len(images)} images cannot be used: {bad[0]}{more}")
    return {
        "items": len(items),
        "categories": dict(sorted(Counter(item.category for item in items).items())),
        "answer_types": dict(Counter("box" if item.box is not None else "text" for item in items)),
        "images": len(images),
        "image_sizes": {f"{w}x{h}": n for (w, h), n in sizes.most_common(5)},
    }
