"""Threads or processes on a small CPU (issue 31): is one training process with every core faster than one process per
core, for the demo's VLM step and for the LM ladder's pretraining step?

Each try runs the same step (forward, backward, AdamW; synthetic data of the real shapes, so no data loading) in one
process with `cores` threads, then in `cores` processes with one thread each, started together behind a barrier;
the figure is the steps per second of all processes together over the timed steps. The tries alternate (1 process,
N processes, 1 process, ...) so both see the same machine, and the fastest try of each counts.

Usage: python benchmarks/bench_parallel.py [--steps 20] [--tries 3] [--what vlm,lm]
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import platform
import sys
import time

import torch


def _vlm_step():
    """The demo's variant: ViT 64 px / patch 8 / 128 x 4 (frozen) + gelu-mlp + a 128 x 4 LLaMA, batch 32 of
    64 vision + 27 text tokens, 5 supervised tokens per row."""
    from vlmlab.config import config_from_dict
    from vlmlab.models.build import build_model
    from vlmlab.parts import load_builtin_parts

    load_builtin_parts()
    cfg = config_from_dict(
        {
            "model": {
                "vision": {"id": "vit", "patch_size": 8, "hidden_size": 128, "num_layers": 4, "num_heads": 4},
                "llm": {"id": "llama2-tiny", "hidden_size": 128, "num_layers": 4, "num_heads": 4, "init": "random"},
            },
            "data": {"image": {"size": 64}},
        }
    )
    words = [f"w{i}" for i in range(400)]
    model = build_model(cfg, texts=[" ".join(words[i : i + 8]) for i in range(0, 400, 8)])
    model.memoize_tower = False  # the tower runs every step, as without the memo
    for p in model.vision.parameters():
        p.requires_grad_(False)
    llm = model.llm
    b, text, vision = 32, 27, model.num_image_tokens
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 400, (b, text + vision), generator=gen)
    image_mask = torch.zeros_like(ids, dtype=torch.bool)
    image_mask[:, 3 : 3 + vision] = True
    ids[image_mask] = llm.image_token_id
    labels = torch.full_like(ids, -100)
    labels[:, -5:] = ids[:, -5:]
    pixels = torch.randn(b, 3, 64, 64, generator=gen)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    mask = torch.ones_like(ids)

    def step():
        out = model(ids, mask, image_mask, pixels, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _lm_step():
    """The ladder's gen3 step: a 128 x 4 LLaMA (GQA, 2048-token vocabulary), batch 16 x 256 tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=2048,
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    lm = LlamaForCausalLM(cfg)
    batch = torch.randint(0, 2048, (16, 256))
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-4)

    def step():
        lm(input_ids=batch, labels=batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _worker(what: str, threads: int, steps: int, barrier, results) -> None:
    torch.set_num_threads(threads)
    step = {"vlm": _vlm_step, "lm": _lm_step}[what]()
    for _ in range(3):  # warm-up
        step()
    barrier.wait()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    results.put(time.perf_counter() - started)


def one_try(what: str, procs: int, threads: int, steps: int) -> float:
    """Steps per second of `procs` processes with `threads` threads each, all stepping at once."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(what, threads, steps, barrier, results)) for _ in range(procs)]
    for w in workers:
        w.start()
    times = [results.get() for _ in workers]
    for w in workers:
        w.join()
    return procs * steps / max(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--tries", type=int, default=3)
    ap.add_argument("--what", default="vlm,lm")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    os.environ.setdefault("VLMLAB_NO_PROGRESS", "1")
    load = os.getloadavg()[0]
    rows = []
    for what in args.what.split(","):
        best = {}
        for t in range(args.tries):
            for procs, threads in ((1, args.cores), (args.cores, 1)):
                rate = one_try(what, procs, threads, args.steps)
                key = f"{procs} process{'es' if procs > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"
                best.setdefault(key, []).append(rate)
                print(f"{what} try {t}: {key}: {rate:.2f} steps/s", flush=True)
        base = max(next(iter(best.values())))
        for key, rates in best.items():
            rows.append((what, key, max(rates), ", ".join(f"{r:.2f}" for r in rates), max(rates) / base))
    print(
        f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}. "
        f"Date: {datetime.date.today()}. Load average before: {load:.2f}, after: {os.getloadavg()[0]:.2f}. "
        f"Command: `python benchmarks/bench_parallel.py {' '.join(sys.argv[1:])}`\n"
    )
    print("| step | layout | steps/s, all processes (fastest try) | tries | vs one process |")
    print("|---|---|---|---|---|")
    for what, key, rate, tries, rel in rows:
        print(f"| {what} | {key} | {rate:.2f} | {tries} | {rel:.2f}x |")


if __name__ == "__main__":
    main()
