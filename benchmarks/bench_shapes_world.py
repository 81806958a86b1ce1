"""shapes-world benchmark: per-family accuracy of the tiny default VLM, beside chance baselines.

Generates the data if missing, trains `shapes-world-tiny`, evaluates perception / reasoning /
grounding, and prints per-category accuracy, the grounding format-error rate and mean IoU, and a
random-box baseline (uniform random corners, seeded) for Acc@IoU>=0.5.

Usage: python benchmarks/bench_shapes_world.py [--data data/shapes-world] [--out runs/bench-shapes] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("VLMLAB_NO_PROGRESS", "1")

from vlmlab.cli import resolve_config_path  # noqa: E402
from vlmlab.config import load_config, parse_overrides  # noqa: E402
from vlmlab.data.shapes_world import generate  # noqa: E402
from vlmlab.evaluation.evaluate import evaluate_run  # noqa: E402
from vlmlab.metrics import box_iou, parse_box, random_box_baseline  # noqa: E402
from vlmlab.parts import load_builtin_parts  # noqa: E402
from vlmlab.train.trainer import Trainer  # noqa: E402

load_builtin_parts()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/shapes-world")
    ap.add_argument("--out", default="runs/bench-shapes")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override, as in `vlmlab train --set`"
    )
    args = ap.parse_args()
    if not Path(args.data, "test.jsonl").is_file():
        t0 = time.perf_counter()
        generate(args.data, seed=0, n=10000)
        print(f"generated 10k scenes in {time.perf_counter() - t0:.1f}s -> {args.data}")
    overrides = {"data.train.path": args.data, **{f"data.eval.{i}.path": args.data for i in range(3)}}
    cfg = load_config(resolve_config_path("shapes-world-tiny"), {**overrides, **parse_overrides(args.set)})
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    result = Trainer(cfg, out).run_training()
    print(
        f"training: {(time.perf_counter() - t0) / 60:.1f} min ({result.steps} VQA steps, {result.samples_per_s:.0f} samples/s); "
        f"vision-pretrain {result.vision_pretrain}"
    )
    metrics = evaluate_run(out, model=result.model.eval(), cfg=cfg)
    records = pd.read_parquet(out / "predictions.parquet")
    for task, m in metrics["per_task"].items():
        print(f"{task:18s} {m['accuracy']:.3f} (n={m['n']})")
    for name, m in metrics["per_category"].items():
        print(f"  {name:32s} {m['accuracy']:.3f} (n={m['n']})")
    ground = records[records["category"] == "ground"]
    boxes = [parse_box(p) for p in ground["prediction"]]
    gold = [parse_box(a) for a in ground["answer"]]
    ious = [box_iou(b, g) if b is not None else 0.0 for b, g in zip(boxes, gold)]
    print(
        f"grounding: Acc@0.5 {ground['score'].mean():.3f}, mean IoU {np.mean(ious):.3f}, "
        f"format-error rate {np.mean([b is None for b in boxes]):.3f}; random-box baseline Acc@0.5 {random_box_baseline(gold):.3f}"
    )


if __name__ == "__main__":
    main()
