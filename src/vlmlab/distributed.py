"""Which process this is when a job runs as several (torchrun / accelerate launch); one process writes files."""

from __future__ import annotations

import torch


def process_group() -> tuple[int, int]:
    """(rank, world size) of the running job: (0, 1) unless launched with several processes."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return process_group()[0] == 0


def barrier() -> None:
    """Wait for every process (a no-op in a single process)."""
    if process_group()[1] > 1:
        torch.distributed.barrier()


def all_sum(accelerator, value: float) -> float:
    """`value` summed over the accelerator's processes (itself in a single process)."""
    if accelerator.num_processes == 1:
        return value
    total = torch.tensor([float(value)], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(total, reduction="sum").item())
