"""`shapes-world-chat`: each shapes-world scene as one multi-turn conversation (training data, as LLaVA's).

A scene's generated questions (one per category, answers balanced by the generator) become the turns of one
conversation, joined by a box question for every object the scene can name: each uniquely named object
("Give the box of the red circle.") and each object a relation singles out ("... the shape left of the red
circle."). The turns are shuffled per scene (seeded by the scene) and cut at `MAX_TURNS`. One sample then
supervises every answer about its image, with one pass of the vision tower — why LLaVA's instruction data is
multi-turn — and grounding, the hardest family, gets several boxes per image instead of one.

For training: evaluation keeps the single-turn `shapes-world` tasks (`shapes-perception`, `-reasoning`,
`-grounding`), whose questions are exactly the first kind of turn.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from vlmlab.data.items import VQAItem
from vlmlab.data.shapes_world import box_text_coords, candidate_questions
from vlmlab.data.tasks.shapes_world import ShapesWorld
from vlmlab.data.tasks.vqa_jsonl import json_records
from vlmlab.errors import DataError
from vlmlab.registry import register_task

MAX_TURNS = 8  # 64 vision tokens + 8 short turns stay well inside gen1's 256 positions


@register_task("shapes-world-chat")
class ShapesWorldChat(ShapesWorld):
    """shapes-world scenes as conversations: the scene's questions plus a box question per nameable object."""

    def load(self, split: str, limit: int | None = None, path: str | None = None) -> list[VQAItem]:
        questions = super().load(split, None, path)
        root = Path(path)  # checked by the shapes-world loader above
        per_image: dict[str, list[VQAItem]] = {}
        for item in questions:
            per_image.setdefault(item.image, []).append(item)
        items = []
        for where, scene in json_records(root / "scenes.jsonl"):
            image = str((root / str(scene.get("image"))).resolve())
            if scene.get("split") != split or image not in per_image:
                continue
            items.append(conversation_item(scene, per_image[image], split, where))
            if limit is not None and len(items) >= limit:
                break
        if not items:
            raise DataError(f"{root}: no {split} scenes with questions")
        return items


def conversation_item(scene: dict, asked: list[VQAItem], split: str, where: str) -> VQAItem:
    """One scene's conversation: its asked questions and every box question, shuffled, at most MAX_TURNS."""
    try:
        size = int(scene["width"])
        candidates = candidate_questions(scene["objects"], size)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{where}: not a shapes-world scene ({exc.__class__.__name__}: {exc})") from None
    turns = {item.question: item.answer for item in asked}
    for question, obj in candidates["ground"] + candidates["ground_relational"]:
        turns.setdefault(question, "[{}, {}, {}, {}]".format(*box_text_coords(obj["box"], size)))
    rng = np.random.default_rng([zlib.crc32(f"{split}/{scene['scene_id']}".encode())])
    order = [list(turns.items())[i] for i in rng.permutation(len(turns))[:MAX_TURNS]]
    first = asked[0]
    return VQAItem(
        item_id=f"{split}-{scene['scene_id']}",
        task="shapes-world-chat",
        category="conversation",
        question=order[0][0],
        answer=order[0][1],
        image=first.image,
        conversation=tuple(order) if len(order) > 1 else (),
    )
