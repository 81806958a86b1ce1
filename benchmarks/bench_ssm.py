"""SSM encoders on CPU: the pure chunked selective scan vs transformers' Mamba slow path, and cost vs resolution.

1. fwd+bwd of 4 Mamba layers (d=128, N=16, expand 2) on 8 x 64 tokens: vlmlab's `MambaMixer` (chunked
   parallel scan) vs `transformers.MambaModel` layers (its sequential slow path, used without CUDA kernels).
2. forward time of `vmamba` and `vit` as the patch count grows 64 -> 1024 (image side 32 -> 128 px at
   patch 4), ratio of the largest to the smallest.

Usage: python benchmarks/bench_ssm.py
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

torch.set_num_threads(2)


def timed(fn, repeats: int = 5, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def scan_vs_transformers() -> None:
    from transformers import MambaConfig, MambaModel

    from vlmlab.models.vision.mamba_blocks import MambaMixer

    torch.manual_seed(0)
    x = torch.randn(8, 64, 128)
    ours = nn.ModuleList(MambaMixer(128, d_state=16, expand=2) for _ in range(4))
    norms = nn.ModuleList(nn.LayerNorm(128) for _ in range(4))

    def run_ours():
        h = x
        for norm, mixer in zip(norms, ours):
            h = h + mixer(norm(h))
        h.sum().backward()

    hf = MambaModel(
        MambaConfig(hidden_size=128, state_size=16, expand=2, num_hidden_layers=4, vocab_size=16, use_mambapy=False)
    )

    def run_hf():
        hf(inputs_embeds=x).last_hidden_state.sum().backward()

    a, b = timed(run_ours), timed(run_hf)
    print(
        f"fwd+bwd, 4 Mamba layers, 8 x 64 tokens, d=128: vlmlab chunked scan {a * 1000:.0f} ms, "
        f"transformers slow path {b * 1000:.0f} ms ({b / a:.1f}x)"
    )


def cost_vs_resolution() -> None:
    from vlmlab.parts import load_builtin_parts
    from vlmlab.registry import VISION_ENCODERS

    load_builtin_parts()
    vm, vit = VISION_ENCODERS.get("vmamba"), VISION_ENCODERS.get("vit")
    rows = []
    for side in (32, 64, 128):  # 64, 256, 1024 patches of 4 px
        vmamba = vm.build(vm.Params(patch_size=4, hidden_size=32, depths=[2], tap_stage=1, d_state=8), image_size=side)
        vitm = vit.build(vit.Params(patch_size=4, hidden_size=64, num_layers=2, num_heads=4), image_size=side)
        img = torch.randn(2, 3, side, side)
        with torch.no_grad():
            rows.append(
                (
                    side,
                    (side // 4) ** 2,
                    timed(lambda m=vmamba, x=img: m(x), 3, 1),
                    timed(lambda m=vitm, x=img: m(x), 3, 1),
                )
            )
    for side, n, a, b in rows:
        print(f"{n:>5} patches ({side} px): vmamba {a * 1000:7.1f} ms   vit {b * 1000:7.1f} ms")
    print(f"growth 64 -> 1024 patches: vmamba {rows[-1][2] / rows[0][2]:.1f}x, vit {rows[-1][3] / rows[0][3]:.1f}x")


if __name__ == "__main__":
    scan_vs_transformers()
    cost_vs_resolution()
