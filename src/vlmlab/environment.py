"""Where a result was computed: package versions, git sha, Python, OS, CPUs, accelerator (stored with every run)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def environment() -> dict[str, Any]:
    """Package versions, git sha, Python, OS, CPU count and accelerator: stored with every run and study."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    packages = {}
    for name in (
        "vlmlab",
        "torch",
        "transformers",
        "tokenizers",
        "accelerate",
        "peft",
        "safetensors",
        "pydantic",
        "numpy",
        "pandas",
    ):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "packages": packages,
        "git_sha": _git_sha(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "gpu_count": torch.cuda.device_count() if gpu else 0,
    }


def _git_sha() -> str | None:
    """The commit of the vlmlab checkout in use (None for an installed wheel), with `+dirty` for local changes."""
    src = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=src,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
