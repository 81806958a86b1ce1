"""Routing costs at a real model's shape: full vs FastV vs DPVR on a LLaVA-1.5-7B-shaped checkpoint (GPU).

The weights are random: this measures cost (prefill FLOPs, prefill and decode latency, peak memory),
not accuracy. It also exercises the path a user takes with a released model: a LLaVA-format
checkpoint on disk -> `vlmlab import-llava` -> `vlmlab bench routing` / `vlmlab attention`.

Steps: train a tiny CLIP/LLaMA run for its tokenizer and processor (336 px, patch 14: 576 vision
tokens, as LLaVA-1.5), export it with `vlmlab export --format hf-llava`, widen the language model
to the target shape (default LLaVA-1.5-7B: 32 layers, 4096 wide, 11008 MLP, 32 heads) with random
bf16 weights, save it, import it, bench it.

Usage: python benchmarks/bench_routing_scale.py --out /dev/shm/scale [--layers 32 --hidden 4096 --ffn 11008
       --heads 32 --dtype bfloat16 --dpvr-layer 18 --fastv-layer 2 --fastv-ratio 0.5 --n-probe 16]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import torch

os.environ.setdefault("VLMLAB_NO_PROGRESS", "1")

from vlmlab.cli import main as vlmlab  # noqa: E402
from vlmlab.config import config_from_dict  # noqa: E402
from vlmlab.parts import load_builtin_parts  # noqa: E402
from vlmlab.train.trainer import Trainer  # noqa: E402

load_builtin_parts()

TINY_CLIP_336 = {
    "name": "tiny-clip-336",
    "seed": 0,
    "model": {
        "vision": {
            "id": "vit",
            "family": "clip",
            "feature_layer": -2,
            "patch_size": 14,
            "hidden_size": 64,
            "num_layers": 2,
            "num_heads": 2,
        },
        "projector": {"id": "gelu-mlp"},
        "llm": {"id": "llama2-tiny", "hidden_size": 64, "num_layers": 2, "num_heads": 4, "init": "random"},
    },
    "data": {"train": {"task": "easy-vqa", "split": "train", "limit": 32}, "eval": [], "image": {"size": 336}},
    "train": {"batch_size": 8, "stages": [{"name": "finetune", "max_steps": 1, "lr": {"projector": 1e-3}}]},
}


def widen(llava_dir: Path, out: Path, layers: int, hidden: int, ffn: int, heads: int, dtype: torch.dtype) -> float:
    """Save `llava_dir`'s checkpoint with its language model replaced by a random one of the given shape."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig.from_pretrained(llava_dir)
    text = config.text_config
    text.num_hidden_layers, text.hidden_size, text.intermediate_size = layers, hidden, ffn
    text.num_attention_heads = text.num_key_value_heads = heads
    text.head_dim = hidden // heads
    text.max_position_embeddings = max(text.max_position_embeddings, 4096)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(out)
    for f in llava_dir.iterdir():  # tokenizer, processor, chat template
        if f.is_file() and not f.name.startswith(("config.json", "model", "generation_config")):
            shutil.copy(f, out / f.name)
    n = sum(p.numel() for p in model.parameters())
    del model
    print(
        f"random {n / 1e9:.2f}B-parameter LLaVA ({layers} layers x {hidden}) saved in {time.perf_counter() - t0:.0f}s -> {out}"
    )
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench-routing-scale")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--ffn", type=int, default=11008)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--dpvr-layer", type=int, default=18)
    ap.add_argument("--fastv-layer", type=int, default=2)
    ap.add_argument("--fastv-ratio", type=float, default=0.5)
    ap.add_argument("--n-probe", type=int, default=16)
    ap.add_argument("--attention", action="store_true", help="also run `vlmlab attention` on the imported model")
    args = ap.parse_args()

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    tiny = out / "tiny-run"
    Trainer(config_from_dict(TINY_CLIP_336), tiny).run_training()
    assert vlmlab(["export", str(tiny), str(out / "llava-tiny"), "--format", "hf-llava"]) == 0
    widen(
        out / "llava-tiny",
        out / "llava-scaled",
        args.layers,
        args.hidden,
        args.ffn,
        args.heads,
        getattr(torch, args.dtype),
    )
    t0 = time.perf_counter()
    assert (
        vlmlab(
            [
                "import-llava",
                str(out / "llava-scaled"),
                str(out / "imported"),
                "--dtype",
                args.dtype,
                "--eval",
                "easy-vqa:test",
            ]
        )
        == 0
    )
    print(f"import-llava: {time.perf_counter() - t0:.0f}s")
    shutil.rmtree(out / "llava-scaled")  # the imported run holds the same weights under parts/
    t0 = time.perf_counter()
    assert (
        vlmlab(
            [
                "bench",
                "routing",
                str(out / "imported"),
                "--dpvr-layer",
                str(args.dpvr_layer),
                "--fastv-layer",
                str(args.fastv_layer),
                "--fastv-ratio",
                str(args.fastv_ratio),
                "--n-probe",
                str(args.n_probe),
            ]
        )
        == 0
    )
    print(f"bench routing: {time.perf_counter() - t0:.0f}s")
    if args.attention:
        t0 = time.perf_counter()
        assert vlmlab(["attention", str(out / "imported"), "--n-probe", str(args.n_probe), "--batch-size", "4"]) == 0
        print(f"attention: {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
