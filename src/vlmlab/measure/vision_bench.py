"""`vlmlab bench vision`: each vision tower's forward latency and memory as the image grows, side by side."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pandas as pd
import torch
from pydantic import ValidationError

from vlmlab.errors import ConfigError, validation_error
from vlmlab.measure.cost import sync_device
from vlmlab.progress import progress
from vlmlab.registry import VISION_ENCODERS
from vlmlab.render.plots import colours, plt  # the report's Agg backend


def activation_mib(encoder: torch.nn.Module, images: torch.Tensor) -> float:
    """MiB of tensors autograd keeps for backward in one forward (each storage once): the training-memory cost
    of the tower's activations, measured the same way on any device."""
    seen: dict[tuple[str, int], int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        seen[(str(t.device), storage.data_ptr())] = storage.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        encoder(images.requires_grad_(False)).tokens.sum()
    return sum(seen.values()) / 2**20


def forward_seconds(encoder: torch.nn.Module, images: torch.Tensor, repeats: int) -> float:
    """Median seconds of one inference forward (after one warm-up)."""
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            sync_device(images.device)
            t0 = time.perf_counter()
            encoder(images)
            sync_device(images.device)
            if i:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cuda_peak_mib(encoder: torch.nn.Module, images: torch.Tensor) -> float | None:
    if images.device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(images.device)
    before = torch.cuda.memory_allocated(images.device)
    with torch.no_grad():
        encoder(images)
    return (torch.cuda.max_memory_allocated(images.device) - before) / 2**20


def bench_vision(levels: dict[str, dict[str, Any]], sizes: list[int], batch: int = 1, repeats: int = 3) -> pd.DataFrame:
    """One row per (tower, image side): tokens, parameters, forward ms, activation MiB (+ CUDA peak on GPU).
    `levels`: each tower's `model.vision` config by level name (`study.spec.tower_levels`). A size a tower
    cannot take (its stride does not divide it) is skipped with the reason."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    with progress() as bar:
        job = bar.add_task("vision towers x sizes", total=len(levels) * len(sizes), info="")
        for name, tower_cfg in levels.items():
            key = f"factors.vision.levels.{name}.model.vision"
            cls = VISION_ENCODERS.get(tower_cfg.get("id"), key=f"{key}.id")
            try:
                params = cls.Params(**{k: v for k, v in tower_cfg.items() if k != "id"})
            except ValidationError as exc:
                raise validation_error(exc, prefix=key) from None
            for side in sizes:
                bar.update(job, info=f"{name} {side}px")
                torch.manual_seed(0)
                try:
                    encoder = cls.build(params, image_size=side).to(device).eval()
                except ConfigError as exc:
                    rows.append({"tower": name, "side": side, "skipped": str(exc)})
                    bar.advance(job)
                    continue
                images = torch.randn(batch, 3, side, side, device=device)
                rows.append(
                    {
                        "tower": name,
                        "side": side,
                        "tokens": encoder.num_tokens,
                        "parameters": sum(p.numel() for p in encoder.parameters()),
                        "forward_ms": 1000 * forward_seconds(encoder, images, repeats),
                        "activation_mib": activation_mib(encoder, images),
                        "cuda_peak_mib": cuda_peak_mib(encoder, images),
                    }
                )
                bar.advance(job)
    return pd.DataFrame(rows)


def growth(table: pd.DataFrame) -> pd.DataFrame:
    """Per tower: how many times slower and larger the biggest measured image is than the smallest."""
    out = []
    for tower, t in table.dropna(subset=["forward_ms"]).groupby("tower", sort=False):
        first, last = t.iloc[0], t.iloc[-1]
        out.append(
            {
                "tower": tower,
                "from_px": int(first.side),
                "to_px": int(last.side),
                "time_x": last.forward_ms / first.forward_ms,
                "activation_x": last.activation_mib / first.activation_mib,
            }
        )
    return pd.DataFrame(out)


def plot(table: pd.DataFrame):
    """Forward time and activation memory against image side, one line per tower (log-log)."""
    measured = table.dropna(subset=["forward_ms"])
    towers = list(dict.fromkeys(measured["tower"]))
    cmap = colours(towers)
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4))
    for ax, col, label in (
        (axes[0], "forward_ms", "forward (ms)"),
        (axes[1], "activation_mib", "activations kept for backward (MiB)"),
    ):
        for tower in towers:
            t = measured[measured["tower"] == tower]
            ax.plot(t["side"], t[col], marker="o", ms=3, color=cmap[tower], label=tower)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("image side (px)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
