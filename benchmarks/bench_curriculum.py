"""Can the demo's models learn to point within its step budget (issue 31)? Recipes derived from the demo spec.

Each recipe is a level of one study factor on top of the committed `demo` spec (the same tower, rungs, data and
evaluation), so every recipe of one call shares the demo's vision-pretrain stage (the study's tower cache) and is
scored on the demo's own test questions. A recipe changes only what every rung would share: a box-heavy stage
before the mixture (a curriculum), location tokens, the image's position, the learning rates and step counts.

Recipes (`--recipes`, comma-separated; `--rungs gen1,gen3` picks the LLM levels):
  demo            the committed recipe (image first, digits, align + mixture finetune 0.6 epochs at lr 1e-3)
  mix-tok-after   the demo's mixture with location tokens and the image after the question (no box stage)
  cur<S>-tok-after     a box stage first: <S> finetune steps at lr 2e-3 on the generator's box questions (one per
                  training scene, `shapes-grounding` train), then the demo's mixture; tokens, image after
  cur<S>-tok-before    the same with the image first (LLaVA's layout, what the routing study assumed)
  box<S>-tok-…    the box stage alone (no mixture after it), scored on grounding only: what the stage teaches
  …-lr2           the mixture stage at lr 2e-3 instead of 1e-3
  …-mix<E>        the mixture stage for <E> epochs instead of 0.6 (e.g. mix04 = 0.4)
  …-keep<R>       the mixture keeps the box questions at `repeat: R` (a larger box share after the box stage)
  …-dense<E>      the demo's tower then <E> epochs of dense (detection-style) pretraining on the same images

Usage: python benchmarks/bench_curriculum.py --recipes demo,cur300-tok-after [--rungs gen3] [--out DIR]
       [--only NAME] (train just that variant: run several processes on one --out, each with its own --only)
       [--threads N]
Prints per recipe and rung: accuracy per task, grounding Acc@0.5, optimizer steps and training seconds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import sys
from pathlib import Path

import pandas as pd
import yaml

os.environ.setdefault("VLMLAB_NO_PROGRESS", "1")

from _markdown import md_table  # noqa: E402
from vlmlab.cli import main as vlmlab  # noqa: E402
from vlmlab.config import builtin_config  # noqa: E402

BOXES = {"task": "shapes-grounding", "split": "train", "path": "${datasets.shapes}"}
EASY = {"task": "easy-vqa", "split": "train", "limit": 16000}
SHAPES = {"task": "shapes-world", "split": "train", "path": "${datasets.shapes}"}
DEMO_MIXTURE = 16000 + 24387  # training items of the demo's mixture
_RECIPE = re.compile(r"^(mix|cur\d+|box\d+)-tok-(after|before)((?:-lr2|-mix\d+|-keep\d+|-dense\d+)*)$")


def recipe(name: str, demo: dict) -> dict:
    """The dotted overrides of recipe `name` on the demo spec's base config (keys: see KEYS)."""
    stages = demo["base"]["train"]["stages"]
    vision, align, finetune = stages
    full_eval = demo["base"]["data"]["eval"]
    if name == "demo":
        return {
            "train.stages": stages,
            "data.image.position": "before",
            "model.box_tokens": False,
            "data.eval": full_eval,
        }
    m = _RECIPE.match(name)
    if m is None:
        sys.exit(f"--recipes: unknown recipe {name!r} (see the module docstring)")
    kind, position, opts = m.group(1), m.group(2), m.group(3)
    lr = 2e-3 if "-lr2" in opts else finetune["lr"]["llm"]
    epochs = next((int(x) / 10 for x in re.findall(r"-mix(\d+)", opts)), finetune["epochs"])
    keep = next((int(x) for x in re.findall(r"-keep(\d+)", opts)), None)
    dense = next((int(x) for x in re.findall(r"-dense(\d+)", opts)), None)
    towers = [vision]
    if dense:  # the classify tower, then detection-style: each token's object and box (on the shapes-world images)
        towers.append({**vision, "objective": "dense", "epochs": dense})
    mixture = {**finetune, "epochs": epochs, "lr": {"projector": lr, "llm": lr}}
    if keep:  # the mixture stage's own data (data.train, which the tower pretrains on, stays the demo's), for as many
        # steps as `epochs` of the demo's mixture (16,000 easy-VQA + 24,387 shapes-world items, batch 32)
        mixture = {k: v for k, v in mixture.items() if k != "epochs"}
        mixture.update(max_steps=math.ceil(epochs * DEMO_MIXTURE / 32), data=[EASY, SHAPES, {**BOXES, "repeat": keep}])
    if kind == "mix":
        train = [*towers, align, mixture]
    else:
        box_stage = {
            "name": "finetune",
            "max_steps": int(kind[3:]),
            "lr": {"projector": 2e-3, "llm": 2e-3},
            "data": BOXES,
        }
        train = [*towers, align, box_stage] + ([mixture] if kind.startswith("cur") else [])
    grounding = [e for e in full_eval if e["task"] == "shapes-grounding"]
    return {
        "train.stages": train,
        "data.image.position": position,
        "model.box_tokens": True,
        "data.eval": grounding if kind.startswith("box") else full_eval,
    }


KEYS = ["train.stages", "data.image.position", "model.box_tokens", "data.eval"]


def spec(recipes: list[str], rungs: list[str], threads: int | None) -> dict:
    demo = yaml.safe_load(builtin_config("demo", kind="studies").read_text())
    out = dict(demo)
    out["name"] = "curriculum"
    llm = demo["factors"]["llm"]
    out["factors"] = {
        "llm": {"keys": llm["keys"], "levels": {r: llm["levels"][r] for r in rungs}},
        "recipe": {"keys": KEYS, "levels": {name: recipe(name, demo) for name in recipes}},
    }
    out["eval"] = {"blind": False}
    out["analyses"] = []
    if threads:
        out["set"] = {"train.threads": threads}
    return out


def table(out: Path) -> pd.DataFrame:
    rows = []
    for done in sorted(out.glob("variants/*/seed-*/done.json")):
        run = done.parent
        metrics = json.loads((run / "metrics.json").read_text())
        info = json.loads((run / "train.json").read_text())
        row = {"variant": run.parent.name, "steps": info["steps"], "train_s": round(info["seconds"])}
        for task, m in metrics["per_task"].items():
            row[task] = m["accuracy"]
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default="demo,cur300-tok-after")
    ap.add_argument("--rungs", default="gen3")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-curriculum"))
    ap.add_argument("--only", help="train and evaluate just this variant (e.g. gen3-cur300-tok-after)")
    ap.add_argument("--threads", type=int, help="train.threads of every variant")
    args = ap.parse_args()
    path = args.out.with_suffix(".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec(args.recipes.split(","), args.rungs.split(","), args.threads), sort_keys=False))
    cmd = ["study", str(path), "--out", str(args.out)] + (["--only", args.only] if args.only else [])
    if vlmlab(cmd) != 0:
        sys.exit("the study failed")
    frame = table(args.out)
    line = "python benchmarks/bench_curriculum.py " + " ".join(sys.argv[1:])
    print(
        f"\nMachine: {platform.machine()}, {os.cpu_count()} cores. Date: {datetime.date.today()}. Command: `{line}`\n"
    )
    print(md_table(frame))


if __name__ == "__main__":
    main()
