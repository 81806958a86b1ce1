"""`shapes-world-boxes`: a single-turn box question for every object a shapes-world scene can name (training data).

The generated `shapes-world` set asks one grounding question per scene, so box questions are about 8% of its
items. This task asks, per scene, for the box of each uniquely named object ("Give the box of the red circle.")
and of each object a relation singles out ("Give the box of the shape left of the red circle."), as
`shapes-grounding` asks them: several referring expressions per image, one question per sample. Evaluation keeps
`shapes-grounding`, whose test questions are exactly of this kind (test scenes are never read for training).
"""

from __future__ import annotations

from pathlib import Path

from vlmlab.data.items import VQAItem
from vlmlab.data.shapes_world import candidate_questions
from vlmlab.data.tasks.shapes_world import ShapesWorld
from vlmlab.data.tasks.vqa_jsonl import json_records
from vlmlab.errors import DataError
from vlmlab.registry import register_task


@register_task("shapes-world-boxes")
class ShapesWorldBoxes(ShapesWorld):
    """Every nameable object's box question (direct and relational) of each shapes-world scene, one per item."""

    def load(self, split: str, limit: int | None = None, path: str | None = None) -> list[VQAItem]:
        super().load(split, 1, path)  # the shapes-world loader's checks of path and split
        root = Path(path)
        items: list[VQAItem] = []
        for where, scene in json_records(root / "scenes.jsonl"):
            if scene.get("split") != split:
                continue
            items.extend(box_items(root, scene, split, where))
            if limit is not None and len(items) >= limit:
                return items[:limit]
        if not items:
            raise DataError(f"{root}: no {split} scenes with a nameable object")
        return items


def box_items(root: Path, scene: dict, split: str, where: str) -> list[VQAItem]:
    """The scene's box questions; answers carry the pixel box, so the run's resize or letterbox re-expresses them."""
    try:
        width, height = int(scene["width"]), int(scene["height"])
        candidates = candidate_questions(scene["objects"], width)
        image = str((root / str(scene["image"])).resolve())
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{where}: not a shapes-world scene ({exc.__class__.__name__}: {exc})") from None
    out = []
    for kind in ("ground", "ground_relational"):
        for i, (question, obj) in enumerate(candidates[kind]):
            x1, y1, x2, y2 = (float(v) for v in obj["box"])
            out.append(
                VQAItem(
                    item_id=f"{split}-{scene['scene_id']}-{kind}-{i}",
                    task="shapes-world-boxes",
                    category="ground",
                    question=question,
                    answer="",  # set from `box` by the run's image geometry (load_source)
                    image=image,
                    box=(x1, y1, x2, y2),
                    image_size=(width, height),
                )
            )
    return out
