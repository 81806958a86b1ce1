"""`shapes-world`: generated multi-object scenes (`vlmlab data shapes-world`); exact match, Acc@IoU>=0.5 for boxes."""

from __future__ import annotations

from pathlib import Path

from vlmlab.data.items import VQAItem
from vlmlab.data.shapes_world import SPLITS, scene_labels
from vlmlab.data.tasks.base import Task
from vlmlab.data.tasks.vqa_jsonl import json_records, read_items
from vlmlab.errors import ConfigError, DataError
from vlmlab.metrics import box_hit, exact_match
from vlmlab.registry import register_task

IOU_THRESHOLD = 0.5


@register_task("shapes-world")
class ShapesWorld(Task):
    """Seeded shape scenes: perception, reasoning and grounding questions; `path` is the generated directory."""

    splits = SPLITS

    def load(self, split: str, limit: int | None = None, path: str | None = None) -> list[VQAItem]:
        if path is None:
            raise ConfigError(
                "path", "shapes-world needs the directory written by `vlmlab data shapes-world --out DIR`"
            )
        root = Path(path)
        if not root.is_dir():
            raise DataError(
                f"{root}: shapes-world data directory not found (write it with `vlmlab data shapes-world --out {root}`)"
            )
        if split not in self.splits:
            raise ConfigError("split", f"shapes-world has splits {', '.join(self.splits)}, not {split!r}")
        return read_items(root / f"{split}.jsonl", split, limit, task="shapes-world")

    def image_labels(self, items: list[VQAItem]) -> dict[str, dict[str, str]]:
        """`count`, `has_<colour>_<shape>`, `largest_shape`, `largest_color` per image (`scene_labels`), from the
        scenes.jsonl beside the images/ folder."""
        return _per_image(items, lambda scene: scene_labels(scene["objects"]))

    def image_objects(self, items: list[VQAItem]) -> dict[str, dict]:
        """Each image's objects: exact pixel box, `color` and `shape` (for a `dense` vision-pretrain stage)."""
        return _per_image(
            items,
            lambda scene: {
                "size": (int(scene["width"]), int(scene["height"])),
                "objects": [
                    {"box": list(o["box"]), "color": o["color"], "shape": o["shape"]} for o in scene["objects"]
                ],
            },
        )

    def score(self, prediction: str, item: VQAItem) -> float:
        if item.category != "ground":
            return exact_match(prediction, item.answer)
        return box_hit(prediction, item.answer, IOU_THRESHOLD)


def _per_image(items: list[VQAItem], read) -> dict[str, dict]:
    """`read(scene)` for every image of `items`, from the scenes.jsonl beside each images/ folder."""
    per_root: dict[Path, dict[str, dict]] = {}
    out: dict[str, dict] = {}
    for item in items:
        root = Path(item.image).parent.parent
        if root not in per_root:
            per_root[root] = read_scenes(root, read)
        if item.image in per_root[root]:
            out[item.image] = per_root[root][item.image]
    return out


def read_scenes(root: Path, read) -> dict[str, dict]:
    """{resolved image path: read(scene)} for every scene in `root/scenes.jsonl`."""
    file = root / "scenes.jsonl"
    if not file.is_file():
        raise DataError(f"{file}: scene file not found (needed for image labels)")
    out = {}
    for where, scene in json_records(file):
        try:
            out[str((root / scene["image"]).resolve())] = read(scene)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: not a shapes-world scene ({exc.__class__.__name__}: {exc})") from None
    return out
