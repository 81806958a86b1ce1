"""Refuse a part whose weights cannot fit in memory before allocating it (absurd sizes end in one line, not an OOM kill)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch

from vlmlab.errors import ConfigError

M = TypeVar("M", bound=torch.nn.Module)


def available_bytes() -> int | None:
    """Memory the weights would live in: free GPU memory when CUDA is there, else the OS's MemAvailable."""
    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0]
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def build_if_it_fits(factory: Callable[[], M], key: str, bytes_per_param: int = 4) -> M:
    """Build `factory()` first on the meta device (no memory) to count its parameters; if the weights alone
    exceed the available memory, raise a ConfigError naming `key`; else build it for real."""
    with torch.device("meta"):
        n = sum(p.numel() for p in factory().parameters())
    need, free = n * bytes_per_param, available_bytes()
    if free is not None and need > free:
        raise ConfigError(
            key,
            f"{n / 1e6:,.0f}M parameters need {need / 2**30:,.1f} GiB for the weights alone, more "
            f"than the {free / 2**30:,.1f} GiB available; lower its size fields (hidden_size, num_layers, ...)",
        )
    return factory()
