"""Training benchmark on the default tiny easy-VQA config (2 CPU cores): throughput and accuracy.

1. samples/s of vlmlab's Trainer vs a minimal plain-PyTorch loop on the same model and batches,
   measured in the same process (goal: vlmlab >= 0.95 x plain);
2. test accuracy reached by the default config within its training budget (goal: >= 90% overall, every
   category >= 80%), printed beside the blind baseline (majority answer per question text).

Usage: python benchmarks/bench_train.py [--config easy-vqa-tiny] [--steps 100] [--skip-accuracy] [--out DIR]
The accuracy run is kept in --out (default runs/bench-train) for inspection.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("VLMLAB_NO_PROGRESS", "1")

from vlmlab.cli import resolve_config_path  # noqa: E402
from vlmlab.config import load_config  # noqa: E402
from vlmlab.data.dataset import VQADataset  # noqa: E402
from vlmlab.data.order import SeededBatchOrder  # noqa: E402
from vlmlab.data.sources import load_source  # noqa: E402
from vlmlab.evaluation.evaluate import evaluate_run  # noqa: E402
from vlmlab.models.build import build_model  # noqa: E402
from vlmlab.parts import load_builtin_parts  # noqa: E402
from vlmlab.train.optim import apply_stage_freezing, build_optimizer  # noqa: E402
from vlmlab.train.trainer import Trainer, tokenizer_texts  # noqa: E402

load_builtin_parts()


def plain_loop_samples_per_s(cfg, steps: int) -> float:
    """The same model, data and batches, trained by the shortest correct PyTorch loop."""
    _, items = load_source(cfg.data.train[0], "data.train.0")
    model = build_model(cfg, texts=tokenizer_texts(items)).train()
    stage = cfg.train.stages[-1]
    apply_stage_freezing(model, stage)
    opt = build_optimizer(model, stage, cfg.train)
    data = VQADataset(items, model.llm, cfg.data.image, model.num_image_tokens, with_answers=True)
    order = SeededBatchOrder(
        len(data), cfg.train.batch_size, seed=cfg.seed * 1000 + len(cfg.train.stages) - 1, total_steps=steps
    )
    loader = torch.utils.data.DataLoader(data, batch_sampler=order, collate_fn=data.collate)
    params = [p for p in model.parameters() if p.requires_grad]
    t0, n = None, 0
    for i, batch in enumerate(loader):
        if i == 3:
            t0, n = time.perf_counter(), 0
        loss = model(**batch.model_inputs(), labels=batch.labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        n += len(batch.indices)
    return n / (time.perf_counter() - t0)


def vlmlab_samples_per_s(cfg, steps: int) -> float:
    """vlmlab's Trainer on the last stage alone, for `steps` optimizer steps."""
    stage = cfg.train.stages[-1].model_copy(update={"max_steps": steps})
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"stages": [stage]})})
    with tempfile.TemporaryDirectory() as tmp:
        return Trainer(cfg, Path(tmp) / "run").run_training().samples_per_s


def blind_baseline(cfg) -> dict[str, float]:
    """Majority train answer per question text, scored on the eval split (no image at all)."""
    _, train = load_source(cfg.data.train[0].model_copy(update={"limit": None}), "data.train.0")
    _, test = load_source(cfg.data.eval[0], "data.eval.0")
    votes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for it in train:
        votes[it.question][it.answer] += 1
    overall = collections.Counter()
    per_cat: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for it in test:
        guess = votes[it.question].most_common(1)[0][0] if it.question in votes else "yes"
        ok = guess == it.answer
        overall[ok] += 1
        per_cat[it.category][ok] += 1
    acc = lambda c: c[True] / (c[True] + c[False])  # noqa: E731
    return {"overall": acc(overall), **{k: acc(v) for k, v in sorted(per_cat.items())}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="easy-vqa-tiny")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--out", default="runs/bench-train")
    args = ap.parse_args()
    cfg = load_config(resolve_config_path(args.config))
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )

    plain = plain_loop_samples_per_s(cfg, args.steps)
    ours = vlmlab_samples_per_s(cfg, args.steps)
    plain2 = plain_loop_samples_per_s(cfg, args.steps)  # bracket ours between two plain runs
    plain_mean = (plain + plain2) / 2
    print(
        f"throughput (batch {cfg.train.batch_size}, last stage, {args.steps} steps): plain PyTorch {plain_mean:.1f} samples/s "
        f"({plain:.1f}, {plain2:.1f}), vlmlab Trainer {ours:.1f} samples/s, ratio {ours / plain_mean:.3f} (goal >= 0.95)"
    )

    if args.skip_accuracy:
        return
    base = blind_baseline(cfg)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    result = Trainer(cfg, out).run_training()
    train_s = time.perf_counter() - t0
    metrics = evaluate_run(out, model=result.model.eval(), cfg=cfg)
    pre = result.vision_pretrain
    if pre:
        print(
            f"vision-pretrain: {pre['seconds']:.0f}s, last-epoch train top-1 "
            + ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in pre.items() if k.startswith("train_top1"))
        )
    print(
        f"training wall-clock: {train_s / 60:.1f} min for {result.steps} VQA steps, vision pretraining included (goal: within 10 min)"
    )
    print(
        f"test accuracy overall {metrics['overall']['accuracy']:.3f} (goal >= 0.90); blind baseline {base['overall']:.3f}"
    )
    for name, m in metrics["per_category"].items():
        cat = name.split("/", 1)[1]
        print(f"  {name:18s} {m['accuracy']:.3f} (n={m['n']}, goal >= 0.80); blind {base.get(cat, float('nan')):.3f}")


if __name__ == "__main__":
    main()
