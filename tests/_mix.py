"""A tiny dataset in llava_v1_5_mix665k.json's shape: multi-turn records, `<image>` first or last, ~10% text-only."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}


def write_tiny_mix(root: Path, n: int = 48, seed: int = 0) -> Path:
    """`root/mix.json` and its images under `root/coco/`: n records of 1-3 turns; every 10th is text-only."""
    rng = random.Random(seed)
    (root / "coco").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        if i % 10 == 9:
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            records.append(
                {
                    "id": f"text-{i}",
                    "conversations": [
                        {"from": "human", "value": f"what is {a} plus {b}?"},
                        {"from": "gpt", "value": str(a + b)},
                    ],
                }
            )
            continue
        colour = rng.choice(list(COLOURS))
        size = rng.choice([8, 12, 16])
        img = Image.new("RGB", (32, 32), (250, 250, 250))
        img.paste(COLOURS[colour], (16 - size // 2, 16 - size // 2, 16 + size // 2, 16 + size // 2))
        img.save(root / "coco" / f"{i}.png")
        first = "what colour is the square?"
        turns = [("<image>\n" + first if i % 4 else first + "\n<image>", colour)]
        for _ in range(rng.randint(0, 2)):
            turns.append(
                rng.choice([("is it big?", "yes" if size == 16 else "no"), ("is it red?", str(colour == "red"))])
            )
        conversation = [{"from": who, "value": text} for q, a in turns for who, text in (("human", q), ("gpt", a))]
        records.append({"id": str(i), "image": f"coco/{i}.png", "conversations": conversation})
    file = root / "mix.json"
    file.write_text(json.dumps(records))
    return file
