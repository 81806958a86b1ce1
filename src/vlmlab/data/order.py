"""Seeded, step-addressable batch order: batch k of a run is a pure function of (seed, k)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence

import torch

from vlmlab.config import RunConfig, StageConfig, stage_seed


class SeededBatchOrder(torch.utils.data.Sampler[list[int]]):
    """Yields this rank's slice of global batches `start_step .. total_steps-1`.

    Epoch e is a permutation drawn from `seed` and e; a global batch of `global_batch` indices is
    split into `world` equal contiguous slices, so 2 ranks x b sees exactly what 1 rank x 2b sees.
    Resuming at step k only needs k: no sampler state to save.
    """

    def __init__(
        self,
        n_items: int,
        global_batch: int,
        seed: int,
        total_steps: int,
        start_step: int = 0,
        rank: int = 0,
        world: int = 1,
    ):
        if global_batch % world:
            raise ValueError("global batch must divide evenly across processes")
        self.n = n_items
        self.global_batch = global_batch
        self.seed = seed
        self.total_steps = total_steps
        self.start_step = start_step
        self.rank = rank
        self.world = world
        self.steps_per_epoch = math.ceil(n_items / global_batch)
        self._perm_epoch = -1
        self._perm: list[int] = []

    def _permutation(self, epoch: int) -> list[int]:
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=gen).tolist()
            self._perm_epoch = epoch
        return self._perm

    def global_indices(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.steps_per_epoch)
        perm = self._permutation(epoch)
        chunk = perm[k * self.global_batch : (k + 1) * self.global_batch]
        if len(chunk) < self.global_batch:  # last batch of an epoch: top up from the epoch's start
            chunk = chunk + perm[: self.global_batch - len(chunk)]
        return chunk

    def __iter__(self) -> Iterator[list[int]]:
        per_rank = self.global_batch // self.world
        for step in range(self.start_step, self.total_steps):
            chunk = self.global_indices(step)
            yield chunk[self.rank * per_rank : (self.rank + 1) * per_rank]

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)


def order_fingerprint(item_ids: Sequence[str], order: SeededBatchOrder, n_batches: int = 8) -> str:
    """Hash of the item ids in the first `n_batches` global batches (the control check compares it)."""
    h = hashlib.sha256()
    for step in range(min(n_batches, order.total_steps)):
        for idx in order.global_indices(step):
            h.update(item_ids[idx].encode())
            h.update(b"\0")
    return h.hexdigest()[:16]


def stage_steps(stage: StageConfig, n_items: int, micro_batch: int, grad_accum: int) -> int:
    """Optimizer steps in a stage: `max_steps`, or `epochs` passes over the data."""
    if stage.max_steps is not None:
        return stage.max_steps
    micro_per_epoch = math.ceil(n_items / micro_batch)
    return max(1, math.ceil(stage.epochs * micro_per_epoch / grad_accum))


def stage_order(
    cfg: RunConfig, stage_index: int, n_items: int, start_step: int = 0, rank: int = 0, world: int = 1
) -> tuple[SeededBatchOrder, int]:
    """The batch order of a VQA stage and its number of optimizer steps (one place for trainer and control check)."""
    stage = cfg.train.stages[stage_index]
    micro = (stage.batch_size or cfg.train.batch_size) * world
    accum = cfg.train.grad_accum
    total = stage_steps(stage, n_items, micro, accum)
    order = SeededBatchOrder(
        n_items,
        micro,
        seed=stage_seed(cfg.seed, stage_index),
        total_steps=total * accum,
        start_step=start_step * accum,
        rank=rank,
        world=world,
    )
    return order, total


def training_order_fingerprints(cfg: RunConfig, item_ids: Sequence[str]) -> list[str]:
    """`order_fingerprint` of every VQA stage of a run (vision-pretrain stages draw their own order)."""
    return [
        order_fingerprint(item_ids, stage_order(cfg, s, len(item_ids))[0])
        for s, stage in enumerate(cfg.train.stages)
        if stage.kind.on_sequences
    ]


def optimizer_steps_before(cfg: RunConfig, stage_index: int, n_items: int, world: int = 1) -> int:
    """Optimizer steps of the sequence stages before `stage_index` (the x axis trackers log against)."""
    return sum(
        stage_order(cfg, i, n_items, world=world)[1]
        for i in range(stage_index)
        if cfg.train.stages[i].kind.on_sequences
    )
