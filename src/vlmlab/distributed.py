"""Which process this is when a job runs as several (torchrun / accelerate launch); one process writes files."""

from __future__ import annotations

import os

import torch


def process_group() -> tuple[int, int]:
    """(rank, world size) of the running job: (0, 1) unless launched with several processes. Before the process
    group is up (a study decides who writes before its first Trainer starts one), the launcher's RANK and
    WORLD_SIZE say it."""
    if _initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def work_group() -> tuple[int, int]:
    """(rank, world size) of the processes that share work through collectives: (0, 1) until a process group is
    up, so a job launched as several processes without one has each do all the work rather than hang."""
    if _initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_main_process() -> bool:
    return process_group()[0] == 0


def barrier() -> None:
    """Wait for every process (a no-op in a single process)."""
    if _initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()


def all_sum(accelerator, value: float) -> float:
    """`value` summed over the accelerator's processes (itself in a single process)."""
    if accelerator.num_processes == 1:
        return value
    total = torch.tensor([float(value)], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(total, reduction="sum").item())
