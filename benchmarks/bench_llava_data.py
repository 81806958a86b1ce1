"""LLaVA-scale data on a laptop: time to the first optimizer step on a 665k-record mix, and loader throughput.

(a) Writes a synthetic file in llava_v1_5_mix665k.json's shape (665,298 records; turns per record drawn from
    a long-tailed distribution, mean ~3 pairs; 6% text-only with longer answers; `<image>` first or last in
    the first turn; images drawn from a pool of 336 px JPEGs), then runs `vlmlab train` on it with tiny
    backbones (the data path is what is measured) and records the seconds until the first optimizer step
    is logged and the peak RSS of the training process and its workers. Goal: <= 60 s and <= 4 GiB.
(b) Loader throughput in samples/s with 0, 1 and 2 workers (decode + letterbox + tokenize + collate at
    336 px), against what a GPU consumes on the 7B recipe (the arithmetic is printed).

Usage: python benchmarks/bench_llava_data.py [--records 665298] [--out /tmp/llava-bench] [--skip-a] [--skip-b]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch
import yaml
from PIL import Image

os.environ.setdefault("VLMLAB_NO_PROGRESS", "1")

from vlmlab.config import config_from_dict  # noqa: E402
from vlmlab.data.dataset import VQADataset  # noqa: E402
from vlmlab.data.loader import batch_loader  # noqa: E402
from vlmlab.data.sources import load_training_items  # noqa: E402
from vlmlab.models.build import build_model  # noqa: E402
from vlmlab.parts import load_builtin_parts  # noqa: E402

RECORDS = 665_298  # llava_v1_5_mix665k.json
POOL = 64  # distinct JPEGs the records point at
WORDS = "the a of to in is on with and red blue green large small left right image man woman car bus dog".split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_mix(root: Path, records: int, seed: int = 0) -> Path:
    """The synthetic mix (see the module docstring); returns the JSON file."""
    rng = random.Random(seed)
    (root / "coco").mkdir(parents=True, exist_ok=True)
    for i in range(POOL):
        w, h = rng.choice([(336, 336), (336, 252), (252, 336), (336, 224)])
        img = Image.new("RGB", (w, h), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        for _ in range(12):  # some structure, so JPEG decoding costs what a photo's does
            x, y = rng.randrange(w), rng.randrange(h)
            img.paste((rng.randrange(256), rng.randrange(256), rng.randrange(256)), (x, y, x + 40, y + 40))
        img.save(root / "coco" / f"{i:04d}.jpg", quality=90)
    out = []
    for i in range(records):
        pairs = min(1 + int(rng.expovariate(0.5)), 20)  # long-tailed: most 1-3 pairs, some up to 20
        if rng.random() < 0.06:  # ShareGPT: text only, long answers
            turns = [(_sentence(rng, 20), _sentence(rng, rng.randint(60, 300))) for _ in range(pairs)]
            conversations = [{"from": w, "value": v} for q, a in turns for w, v in (("human", q), ("gpt", a))]
            out.append({"id": f"sg-{i}", "conversations": conversations})
            continue
        turns = [(_sentence(rng, rng.randint(5, 15)), _sentence(rng, rng.randint(1, 25))) for _ in range(pairs)]
        first = turns[0][0]
        turns[0] = (f"<image>\n{first}" if rng.random() < 0.8 else f"{first}\n<image>", turns[0][1])
        conversations = [{"from": w, "value": v} for q, a in turns for w, v in (("human", q), ("gpt", a))]
        out.append({"id": str(i), "image": f"coco/{rng.randrange(POOL):04d}.jpg", "conversations": conversations})
    file = root / "llava_v1_5_mix665k.json"
    file.write_text(json.dumps(out))
    return file


def tiny_config(file: Path, workers: int, tokenizer: Path | None = None) -> dict:
    """Tiny backbones (what is measured is the data path); with `tokenizer`, the LLM's tokenizer is read from
    there, as a real backbone's is, instead of being fit to all 665k records' texts."""
    llm = {"id": "llama2-tiny", "hidden_size": 32, "num_layers": 2, "num_heads": 4, "init": "random"}
    if tokenizer is not None:
        llm["tokenizer_path"] = str(tokenizer)
    return {
        "name": "llava-data-bench",
        "seed": 0,
        "model": {
            "vision": {
                "id": "vit",
                "family": "clip",
                "patch_size": 42,
                "hidden_size": 32,
                "num_layers": 1,
                "num_heads": 2,
            },
            "projector": {"id": "gelu-mlp"},
            "llm": llm,
        },
        "data": {
            "train": [{"task": "llava-json", "path": str(file)}],
            "image": {"size": 336, "geometry": "letterbox-square"},
            "workers": workers,
        },
        "train": {
            "batch_size": 16,
            "max_length": 2048,
            "group_by_length": "modality",
            "log_every": 1,
            "stages": [{"name": "finetune", "max_steps": 1000, "lr": {"projector": 2e-5, "llm": 2e-5}}],
        },
    }


def save_tokenizer(file: Path, out: Path) -> Path:
    """A tokenizer fit to the first 2,000 records, saved as a backbone's would be."""
    directory = out / "tokenizer"
    if not directory.is_dir():
        sample = out / "sample.json"
        sample.write_text(json.dumps(json.loads(file.read_text())[:2000]))
        cfg = config_from_dict(tiny_config(sample, 0))
        items = load_training_items(cfg)
        model = build_model(cfg, texts=[t for it in items for turn in it.turns for t in turn])
        model.llm.save_tokenizer(directory)
    return directory


def _memory(process: psutil.Process) -> int:
    """Proportional set size (shared pages split between the processes sharing them), else RSS."""
    try:
        return process.memory_full_info().pss
    except (psutil.Error, AttributeError):
        return process.memory_info().rss


def time_to_first_step(file: Path, out: Path, workers: int, tokenizer: Path) -> tuple[float, float]:
    """(seconds from `vlmlab train` to its first logged optimizer step, peak memory in GiB of it and its workers:
    the sum of their proportional set sizes, so pages a forked worker shares with its parent count once)."""
    config = out / "bench.yaml"
    config.write_text(yaml.safe_dump(tiny_config(file, workers, tokenizer)))
    run = out / "run"
    subprocess.run(["rm", "-rf", str(run)], check=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlmlab", "train", str(config), "--out", str(run), "--no-eval"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    parent, peak, log = psutil.Process(proc.pid), 0, run / "train_log.jsonl"
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"vlmlab train ended early: {proc.stderr.read()[-2000:]}")
            try:
                rss = _memory(parent) + sum(_memory(c) for c in parent.children(recursive=True))
            except psutil.Error:
                rss = 0
            peak = max(peak, rss)
            if log.is_file() and any('"loss"' in line for line in log.read_text().splitlines()):
                return time.perf_counter() - t0, peak / 2**30
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()


def loader_throughput(file: Path, workers: int, batches: int = 40) -> float:
    """Samples/s the data pipeline delivers with `workers` processes (decode, letterbox, tokenize, collate)."""
    cfg = config_from_dict(tiny_config(file, workers))
    items = load_training_items(cfg)[:20_000]
    model = build_model(cfg, texts=[t for it in items[:2000] for turn in it.turns for t in turn])
    data = VQADataset(
        items, model.llm, cfg.data.image, model.num_image_tokens, with_answers=True, max_length=2048,
        image_cache_bytes=0,  # every image decoded, as at LLaVA scale
    )  # fmt: skip
    rng = random.Random(0)
    order = [[rng.randrange(len(items)) for _ in range(16)] for _ in range(batches + 5)]
    loader = iter(batch_loader(data, order, workers))
    for _ in range(5):  # warm-up: worker start, first images
        next(loader)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches * 16 / (time.perf_counter() - t0)


def gpu_consumption() -> tuple[float, str]:
    """Samples/s one H100 trains on the 7B recipe at 40% MFU, and the arithmetic."""
    params, tokens, vision = 6.7e9, 576 + 250, 0.3e9  # Vicuna-7B; vision tokens + a typical mix665k text length
    train = 8 * params * tokens  # forward 2, backward 4, recompute 2 (gradient checkpointing) FLOPs per param-token
    tower = 2 * vision * 577  # the frozen CLIP-L/336 forward
    peak = 989e12 * 0.40  # H100 SXM dense bf16 peak x 40% MFU
    rate = peak / (train + tower)
    text = (
        f"(8 x 6.7e9 params x 826 tokens + 2 x 0.3e9 x 577) = {(train + tower) / 1e12:.1f} TFLOP per sample; "
        f"989 TFLOP/s x 0.40 = {peak / 1e12:.0f} TFLOP/s -> {rate:.1f} samples/s per H100"
    )
    return rate, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=RECORDS)
    parser.add_argument("--out", default="/tmp/llava-bench")
    parser.add_argument("--skip-a", action="store_true")
    parser.add_argument("--skip-b", action="store_true")
    args = parser.parse_args()
    load_builtin_parts()
    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    file, marker = out / "llava_v1_5_mix665k.json", out / f".records-{args.records}"
    if not (file.is_file() and marker.is_file()):  # written once per record count, then reused
        t0 = time.perf_counter()
        file = write_mix(out, args.records)
        marker.touch()
        print(
            f"wrote {args.records:,} records ({file.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - t0:.0f} s"
        )
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    if not args.skip_a:
        tokenizer = save_tokenizer(file, out)
        print("\n| data.workers | seconds to the first optimizer step | peak memory (GiB PSS, with workers) |")
        print("|---|---|---|")
        for workers in (0, 1):
            seconds, rss = time_to_first_step(file, out, workers, tokenizer)
            print(f"| {workers} | {seconds:.1f} | {rss:.2f} |", flush=True)
    if not args.skip_b:
        rate, text = gpu_consumption()
        print(f"\nGPU consumption: {text}")
        print("\n| workers | samples/s | H100s one such loader feeds |\n|---|---|---|")
        for workers in (0, 1, 2):
            got = loader_throughput(file, workers)
            print(f"| {workers} | {got:.1f} | {got / rate:.2f} |", flush=True)


if __name__ == "__main__":
    main()
