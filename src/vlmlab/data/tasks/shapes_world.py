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
        """`count`, `largest_shape`, `largest_color` per image, from the scenes.jsonl beside the images/ folder."""
        per_root: dict[Path, dict[str, dict[str, str]]] = {}
        labels: dict[str, dict[str, str]] = {}
        for item in items:
            root = Path(item.image).parent.parent
            if root not in per_root:
                per_root[root] = read_scene_labels(root)
            if item.image in per_root[root]:
                labels[item.image] = per_root[root][item.image]
        return labels

    def score(self, prediction: str, item: VQAItem) -> float:
        if item.category != "ground":
            return exact_match(prediction, item.answer)
        return box_hit(prediction, item.answer, IOU_THRESHOLD)


def read_scene_labels(root: Path) -> dict[str, dict[str, str]]:
    """{resolved image path: scene labels} for every scene in `root/scenes.jsonl`."""
    file = root / "scenes.jsonl"
    if not file.is_file():
        raise DataError(f"{file}: scene file not found (needed for image labels)")
    out = {}
    for where, scene in json_records(file):
        try:
            out[str((root / scene["image"]).resolve())] = scene_labels(scene["objects"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: not a shapes-world scene ({exc.__class__.__name__}: {exc})") from None
    return out
