"""The user cache (`$VLMLAB_CACHE`, default ~/.cache/vlmlab): generated datasets and pretrained parts, keyed by recipe."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "VLMLAB_CACHE"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vlmlab")


def shapes_world_dataset(seed: int, n: int, size: int = 64) -> Path:
    """The shapes-world directory for (seed, n, size), generated on first use (`generate` writes a temp dir, then renames)."""
    from vlmlab.data.shapes_world import generate
    from vlmlab.progress import console

    target = cache_root() / "datasets" / f"shapes-world-s{seed}-n{n}-{size}px"
    if (target / "meta.json").is_file():
        return target
    console.print(f"generating shapes-world (seed {seed}, {n} scenes, {size}px) -> {target}")
    generate(target, seed, n, size)
    return target
