"""What limits grounding at demo scale (issue 20): the demo's tower, projector and LLM trained on box questions.

Each variant is one `vlmlab train` run on the demo's parts (ViT 64 px / patch 8 / 128 wide / 4 layers, gelu-mlp,
the pretrained llama2-tiny rung at 128 wide / 4 layers): a vision-pretrain stage on the demo's shapes-world set
(seed 0, 4000 scenes; cached, shared by variants with the same objective), an align stage of 60 steps, then
`--steps` finetune steps at batch 32 and lr 1e-3 on a larger shapes-world set (seed 0, `--n` scenes). Every
variant is scored on the same `--eval` test questions of `shapes-grounding` (Acc@IoU>=0.5 in the 0-99 grid),
and the predictions are split into:

- direct ("the red circle") vs relational ("the shape left of the red circle") questions;
- per number of objects in the scene;
- `other object`: a miss whose box hits (IoU >= 0.5) another object of the scene - the model found an object
  but not the one asked for (selection), as opposed to a box that hits nothing (localization).

Variants (`--variants`, comma-separated):
  ground-only       finetune on the shapes-grounding questions only (one per scene), dense tower
  ground-classify   the same with the classify tower (the demo's objective until now): does dense pretraining help?
  ground-after      ground-only with the image after the question (`data.image.position: after`): the vision tokens
                    can attend to the question
  ground-after-lr2  ground-after at twice the finetune learning rate (2e-3); -lr4 at 4e-3
  mixed-after       ground-after on the demo's mixture instead (easy-VQA 16k + every shapes-world question family),
                    so box questions are ~8% of the samples, as in the demo
  mixed-chat-after-lr2  easy-VQA 16k + shapes-world-chat (a scene's questions and its box questions as one
                    conversation), image after, lr 2e-3
  ground-chat       finetune on shapes-world-chat conversations (a box turn per nameable object), dense tower
  mixed-boxes-after-lr2  the demo's mixture plus shapes-world-boxes (a single-turn box question for every nameable
                    object of each scene), image after, lr 2e-3; -boxes2 repeats that source twice
  easy8-boxes2-after-lr2  mixed-boxes2 with easy-VQA halved to 8k
  …-tokens          the same with `model.box_tokens: true` (one location token per coordinate instead of digits);
                    boxes-after-lr2-tokens trains on shapes-world-boxes alone; easy8-ground3-… weights the
                    shapes-grounding questions (one per scene) 3x instead; ground-lr2-tokens keeps the image first

Usage: python benchmarks/bench_grounding.py [--variants ground-only,ground-classify] [--steps 1500] [--n 20000]
       [--eval 600] [--out DIR]
About 6 minutes per variant at 1500 steps on 2 idle cores (plus ~3 min per vision-pretrain objective, once: cached).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

os.environ.setdefault("VLMLAB_NO_PROGRESS", "1")

from vlmlab.cli import main as vlmlab  # noqa: E402
from vlmlab.data.shapes_world import box_text_coords, cached_dataset  # noqa: E402
from vlmlab.metrics.boxes import box_iou, parse_box  # noqa: E402

GROUND = {"task": "shapes-grounding", "split": "train"}
EASY = {"task": "easy-vqa", "split": "train", "limit": 16000}
MIXED = [EASY, {"task": "shapes-world", "split": "train"}]
MIXED_CHAT = [EASY, {"task": "shapes-world-chat", "split": "train"}]
BOXES = {"task": "shapes-world-boxes", "split": "train"}
MIXED_BOXES = [*MIXED, BOXES]
EASY8 = {**EASY, "limit": 8000}
VARIANTS = {  # (vision-pretrain objective, finetune data, data.image.position, finetune lr[, model.box_tokens])
    "ground-only": ("dense", [GROUND], "before", 1e-3),
    "ground-classify": ("classify", [GROUND], "before", 1e-3),
    "ground-after": ("dense", [GROUND], "after", 1e-3),
    "ground-after-lr2": ("dense", [GROUND], "after", 2e-3),
    "ground-after-lr4": ("dense", [GROUND], "after", 4e-3),
    "mixed-after": ("dense", MIXED, "after", 1e-3),
    "mixed-chat-after-lr2": ("dense", MIXED_CHAT, "after", 2e-3),
    "ground-chat": ("dense", [{"task": "shapes-world-chat", "split": "train"}], "before", 1e-3),
    "mixed-boxes-after-lr2": ("dense", MIXED_BOXES, "after", 2e-3),
    "mixed-boxes2-after-lr2": ("dense", [*MIXED, {**BOXES, "repeat": 2}], "after", 2e-3),
    "easy8-boxes2-after-lr2": ("dense", [EASY8, MIXED[1], {**BOXES, "repeat": 2}], "after", 2e-3),
    "ground-after-lr2-tokens": ("dense", [GROUND], "after", 2e-3, True),
    "boxes-after-lr2-tokens": ("dense", [BOXES], "after", 2e-3, True),
    "mixed-boxes-after-lr2-tokens": ("dense", MIXED_BOXES, "after", 2e-3, True),
    "easy8-boxes2-after-lr2-tokens": ("dense", [EASY8, MIXED[1], {**BOXES, "repeat": 2}], "after", 2e-3, True),
    "easy8-ground3-after-lr2-tokens": ("dense", [EASY8, MIXED[1], {**GROUND, "repeat": 3}], "after", 2e-3, True),
    "ground-lr2-tokens": ("dense", [GROUND], "before", 2e-3, True),
}


def config(name: str, variant: tuple, pretrain: Path, data: Path, steps: int, n_eval: int) -> dict:
    objective, train, position, lr, *tokens = variant
    return {
        "name": name,
        "seed": 0,
        "model": {
            "vision": {
                "id": "vit",
                "family": "vit",
                "patch_size": 8,
                "hidden_size": 128,
                "num_layers": 4,
                "num_heads": 4,
            },
            "projector": {"id": "gelu-mlp"},
            "llm": {"id": "llama2-tiny", "hidden_size": 128, "num_layers": 4, "num_heads": 4},
            "box_tokens": bool(tokens and tokens[0]),
        },
        "data": {
            "train": [src if src["task"] == "easy-vqa" else {**src, "path": str(data)} for src in train],
            "eval": [{"task": "shapes-grounding", "split": "test", "path": str(data), "limit": n_eval}],
            "image": {"size": 64, "geometry": "resize", "position": position},
        },
        "train": {
            "batch_size": 32,
            "weight_decay": 0.01,
            "betas": [0.9, 0.98],
            "stages": [
                {
                    "name": "vision-pretrain",
                    "objective": objective,
                    "epochs": 20,
                    "batch_size": 64,
                    "lr": {"vision": 1.0e-3},
                    "augment": ["hflip"],
                    "data": {"task": "shapes-world", "split": "train", "path": str(pretrain)},
                },
                {"name": "align", "max_steps": 60, "lr": {"projector": 1.0e-3}},
                {"name": "finetune", "max_steps": steps, "lr": {"projector": lr, "llm": lr}},
            ],
            "warmup_ratio": 0.05,
            "log_every": 50,
        },
        "eval": {"batch_size": 128, "max_new_tokens": 20},
    }


def diagnose(run: Path, data: Path) -> dict:
    """Acc@0.5 overall, direct / relational, and the share of misses that hit another object of the scene."""
    predictions = pd.read_parquet(run / "predictions.parquet")
    scenes = {s["image"]: s for s in map(json.loads, (data / "scenes.jsonl").read_text().splitlines())}
    rows = []
    for _, r in predictions.iterrows():
        scene = scenes["images/" + Path(r["image"]).name]
        predicted, gold = parse_box(r["prediction"]), parse_box(r["answer"])
        boxes = [box_text_coords(o["box"], scene["width"]) for o in scene["objects"]]
        hit = predicted is not None and box_iou(predicted, gold) >= 0.5
        other = not hit and predicted is not None and any(box_iou(predicted, b) >= 0.5 for b in boxes)
        rows.append({"relational": " shape " in r["question"], "objects": len(boxes), "hit": hit, "other": other})
    f = pd.DataFrame(rows)
    direct, relational = f[~f["relational"]], f[f["relational"]]
    return {
        "acc": f["hit"].mean(),
        "direct": direct["hit"].mean(),
        "relational": relational["hit"].mean(),
        "one_object": f[f["objects"] == 1]["hit"].mean(),
        "several": f[f["objects"] > 1]["hit"].mean(),
        "other_object": f["other"].mean(),
        "format_errors": float(predictions["prediction"].map(parse_box).isna().mean()),
        "n": len(f),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="ground-only,ground-classify")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--n", type=int, default=20000, help="scenes of the finetune / eval set (seed 0)")
    ap.add_argument("--eval", type=int, default=600, help="test questions scored")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-grounding"))
    args = ap.parse_args()
    names = args.variants.split(",")
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        sys.exit(f"--variants: unknown {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    pretrain, data = cached_dataset(0, 4000), cached_dataset(0, args.n)
    results = {}
    for name in names:
        run = args.out / name
        path = args.out / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config(name, VARIANTS[name], pretrain, data, args.steps, args.eval)))
        t0 = time.perf_counter()
        if not (run / "predictions.parquet").is_file() and vlmlab(["train", str(path), "--out", str(run)]) != 0:
            sys.exit(f"{name}: training failed")
        info = json.loads((run / "train.json").read_text())
        vp = info.get("vision_pretrain") or {}
        results[name] = {
            **diagnose(run, data),
            "tower_box_iou": vp.get("heldout_box_iou"),
            "minutes": (time.perf_counter() - t0) / 60,
        }
        print(f"{name}: {results[name]}", flush=True)
    cmd = "python benchmarks/bench_grounding.py " + " ".join(sys.argv[1:])
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} cores. Date: {datetime.date.today()}. Command: `{cmd}`\n")
    print(
        "| variant | Acc@0.5 | direct | relational | 1 object | 2-6 objects | misses on another object | format errors "
        "| tower held-out box IoU | minutes |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        iou = "—" if r["tower_box_iou"] is None else f"{r['tower_box_iou']:.3f}"
        print(
            f"| {name} | {r['acc']:.3f} | {r['direct']:.3f} | {r['relational']:.3f} | {r['one_object']:.3f} | "
            f"{r['several']:.3f} | {r['other_object']:.3f} | {r['format_errors']:.3f} | {iou} | {r['minutes']:.1f} |"
        )


if __name__ == "__main__":
    main()
