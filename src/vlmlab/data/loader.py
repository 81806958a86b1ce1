"""The data pipeline of training and evaluation: a DataLoader over seeded batches, with worker processes that
decode, preprocess and tokenize while the model computes."""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch

IMAGE_CACHE_BYTES = 1 << 30  # decoded images a process keeps, in all (split between the workers)


def resolve_workers(configured: int | None) -> int:
    """`data.workers`, or what the machine allows: the cores beyond two (the training processes keep those),
    shared between the processes of this node (LOCAL_WORLD_SIZE under torchrun / accelerate launch), at most 4
    per process (benchmarks/RESULTS.md: one worker already feeds far more than a GPU consumes); 0 on a 2-core
    machine."""
    if configured is not None:
        return configured
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    return min(4, max(0, ((os.cpu_count() or 1) - 2) // local))


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # a worker's numpy/PIL/tokenizer work is serial; the cores belong to the model


def batch_loader(data, batches: Iterable[list[int]], workers: int, pin_memory: bool = False):
    """Batches of `data` (a VQADataset) in the given order of index lists, made by `workers` processes (0: in
    this one). Rows and collation are deterministic, so the batches do not depend on `workers`."""
    if workers > 0:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers' own threads and forked workers clash
    return torch.utils.data.DataLoader(
        data,
        batch_sampler=batches,
        collate_fn=data.collate,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers > 0 else None,
    )


def image_cache_bytes(workers: int) -> int:
    """The decoded-image cache of each process that makes rows (each worker keeps its own)."""
    return IMAGE_CACHE_BYTES // max(workers, 1)
