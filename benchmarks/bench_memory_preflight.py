"""The memory pre-flight's estimates next to measured peaks (CPU), per part, stage and batch size.

For each configuration: the estimated peak of one training micro-batch of the `align` stage (tower frozen)
and the `finetune` stage (tower trained), and of one evaluation batch, beside the measured peak (weights
plus the heap's highest growth during a real forward + backward + AdamW step, or a greedy generation;
`vlmlab.measure.heap`). Prints a Markdown table for benchmarks/RESULTS.md.

Usage: python benchmarks/bench_memory_preflight.py [--batch 8] [--image-size 64]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform

import torch

os.environ.setdefault("VLMLAB_NO_PROGRESS", "1")

from vlmlab.config import config_from_dict  # noqa: E402
from vlmlab.data.dataset import VQADataset  # noqa: E402
from vlmlab.data.sources import load_training_items  # noqa: E402
from vlmlab.evaluation.generate import greedy_generate  # noqa: E402
from vlmlab.measure import heap  # noqa: E402
from vlmlab.models import footprint  # noqa: E402
from vlmlab.models.build import build_model, enable_gradient_checkpointing  # noqa: E402
from vlmlab.parts import load_builtin_parts  # noqa: E402
from vlmlab.train.optim import apply_stage_freezing, build_optimizer  # noqa: E402

BASE = {
    "name": "mem",
    "seed": 0,
    "model": {
        "projector": {"id": "gelu-mlp"},
        "llm": {"id": "llama2-tiny", "hidden_size": 128, "num_layers": 4, "num_heads": 4, "init": "random"},
    },
    "data": {"train": {"task": "easy-vqa", "split": "train", "limit": 256}, "image": {"size": 64}},
    "train": {
        "batch_size": 8,
        "stages": [
            {"name": "align", "max_steps": 1, "lr": {"projector": 1e-3}},
            {"name": "finetune", "max_steps": 1, "lr": {"projector": 1e-3, "llm": 1e-3, "vision": 1e-3}},
        ],
    },
    "eval": {"batch_size": 8, "max_new_tokens": 4},
}
TOWERS = {
    "vit 128w/4L patch 8": {"id": "vit", "patch_size": 8, "hidden_size": 128, "num_layers": 4, "num_heads": 4},
    "vit 128w/4L patch 4": {"id": "vit", "patch_size": 4, "hidden_size": 128, "num_layers": 4, "num_heads": 4},
    "vim 64w/4L patch 8": {"id": "vim", "patch_size": 8, "hidden_size": 64, "num_layers": 4},
    "vmamba 32w [2,2]": {"id": "vmamba", "patch_size": 4, "hidden_size": 32, "depths": [2, 2], "tap_stage": 2},
}


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def measure(name: str, tower: dict, checkpointing: bool, batch: int, size: int) -> list[str]:
    raw = copy.deepcopy(BASE)
    raw["model"]["vision"] = tower
    raw["train"]["batch_size"] = raw["eval"]["batch_size"] = batch
    raw["data"]["image"]["size"] = size
    raw["train"]["gradient_checkpointing"] = checkpointing
    cfg = config_from_dict(raw)
    items = load_training_items(cfg)
    model = build_model(cfg, texts=[it.question for it in items] + [it.answer for it in items])
    if checkpointing:
        enable_gradient_checkpointing(model)
    data = VQADataset(items, model.llm, cfg.data.image, model.num_image_tokens, with_answers=True)
    longest = sorted(range(len(data)), key=lambda i: -data.length(i))[:batch]
    estimates = footprint.training_footprints(model, cfg, data.extent())
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    rows = []
    for s, stage in enumerate(cfg.train.stages):
        apply_stage_freezing(model, stage)
        optimizer = build_optimizer(model, stage, cfg.train)
        model.train()
        b = data.collate([data[i] for i in longest])

        def step(b=b, optimizer=optimizer):
            model(**b.model_inputs(), labels=b.labels).loss_sum.backward()
            optimizer.step()

        measured = weights + heap.peak_growth(step)
        model.zero_grad(set_to_none=True)
        est = estimates[s].total - estimates[s].parts.get("decoded images", 0)
        rows.append((stage.name, est, measured))
    model.eval()
    gen = VQADataset(items, model.llm, cfg.data.image, model.num_image_tokens, with_answers=False)
    order = sorted(range(len(gen)), key=lambda i: -gen.length(i))[:batch]
    b = gen.collate([gen[i] for i in order])
    est = footprint.eval_footprint(model, cfg, gen.length(order[0])).total
    with torch.no_grad():
        measured = weights + heap.peak_growth(lambda: greedy_generate(model, b, cfg.eval.max_new_tokens))
    rows.append(("evaluation", est, measured))
    label = f"{name}{' + checkpointing' if checkpointing else ''}"
    return [f"| {label} | {phase} | {mib(e)} | {mib(m)} | {e / m:.2f} |" for phase, e, m in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    if not heap.available():
        raise SystemExit("needs glibc (mallinfo2) to measure the heap")
    load_builtin_parts()
    torch.set_num_threads(2)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"batch {args.batch}, image {args.image_size} px, llama2-tiny 128 wide / 4 layers, fp32\n")
    print("| tower | phase | estimate (MiB) | measured (MiB) | estimate / measured |")
    print("|---|---|---|---|---|")
    for name, tower in TOWERS.items():
        for checkpointing in (False, True) if tower["id"] == "vit" else (False,):
            for row in measure(name, tower, checkpointing, args.batch, args.image_size):
                print(row, flush=True)


if __name__ == "__main__":
    main()
