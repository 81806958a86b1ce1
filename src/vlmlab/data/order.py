"""Seeded, step-addressable batch order: batch k of a run is a pure function of (seed, k) and the items.

With `train.group_by_length: modality` (LLaVA-1.5's `group_by_modality_length`) an epoch's batches hold
items of one modality (with an image, or text-only) and of similar length, which cuts padding; the
grouping is drawn from the same seed, so resume stays exact and 2 ranks x b still see what 1 x 2b sees.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch

from vlmlab.config import RunConfig, StageConfig, stage_seed
from vlmlab.data.items import VQAItem

GROUP_WINDOW = 32  # global batches sorted by length together when grouping (more: less padding, less mixing)


def modality_length(item: VQAItem) -> int:
    """LLaVA's grouping length: the conversation's words, negative for a text-only item. It reads the text only
    (no tokenizer, no model), so every variant of a study groups the same items the same way."""
    words = sum(len(q.split()) + len(a.split()) for q, a in item.turns)
    return max(words, 1) if item.image is not None else -max(words, 1)


class SeededBatchOrder(torch.utils.data.Sampler[list[int]]):
    """Yields this rank's slice of global batches `start_step .. total_steps-1`.

    Epoch e is a permutation drawn from `seed` and e; a global batch of `global_batch` indices is
    split into `world` equal contiguous slices, so 2 ranks x b sees exactly what 1 rank x 2b sees.
    Resuming at step k only needs k: no sampler state to save. With `lengths` (`modality_length` per item)
    the epoch's permutation is grouped: each modality's items, in permuted order, are sorted by length in
    windows of `GROUP_WINDOW` global batches and cut into batches; the leftovers of both modalities form the
    last mixed batches; the batches are then put in a seeded random order. An epoch keeps ceil(n / batch)
    batches either way.
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
        lengths: Sequence[int] | None = None,
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
        self.lengths = list(lengths) if lengths is not None else None
        if self.lengths is not None and len(self.lengths) != n_items:
            raise ValueError("one length per item")
        self._perm_epoch = -1
        self._perm: list[int] = []
        self._batches_epoch = -1
        self._batches: list[list[int]] = []

    def _permutation(self, epoch: int) -> list[int]:
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=gen).tolist()
            self._perm_epoch = epoch
        return self._perm

    def _grouped(self, epoch: int) -> list[list[int]]:
        """The epoch's global batches, grouped by modality and length (see the class docstring)."""
        if epoch == self._batches_epoch:
            return self._batches
        perm, size = self._permutation(epoch), self.global_batch
        batches, leftovers = [], []
        for image in (True, False):
            part = [i for i in perm if (self.lengths[i] > 0) == image]
            full = len(part) - len(part) % size
            for w in range(0, full, size * GROUP_WINDOW):
                window = sorted(part[w : min(w + size * GROUP_WINDOW, full)], key=lambda i: -abs(self.lengths[i]))
                batches += [window[b : b + size] for b in range(0, len(window), size)]
            leftovers += part[full:]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 500_009)
        batches = [batches[j] for j in torch.randperm(len(batches), generator=gen).tolist()]
        for b in range(0, len(leftovers), size):  # the mixed remainder goes last, topped up like an epoch's end
            chunk = leftovers[b : b + size]
            batches.append(chunk + perm[: size - len(chunk)])
        self._batches_epoch, self._batches = epoch, batches
        return batches

    def global_indices(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.steps_per_epoch)
        if self.lengths is not None:
            return self._grouped(epoch)[k]
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
    cfg: RunConfig,
    stage_index: int,
    n_items: int,
    start_step: int = 0,
    rank: int = 0,
    world: int = 1,
    lengths: Sequence[int] | None = None,
) -> tuple[SeededBatchOrder, int]:
    """The batch order of a VQA stage and its number of optimizer steps (one place for trainer and control check).
    `lengths` (`modality_length` per item) are used when the run groups batches (`train.group_by_length`)."""
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
        lengths=lengths if cfg.train.group_by_length == "modality" else None,
    )
    return order, total


def training_order_fingerprints(
    cfg: RunConfig, stage_items: Callable[[int], Sequence[VQAItem]], columns: dict[int, tuple] | None = None
) -> list[str]:
    """`order_fingerprint` of every VQA stage of a run (vision-pretrain stages draw their own order);
    `stage_items(s)` gives the items stage `s` trains on. `columns` memoizes each item list's ids and lengths
    (keyed by the list's identity) across the runs of a study."""
    out = []
    for s, stage in enumerate(cfg.train.stages):
        if stage.kind.on_sequences:
            items = stage_items(s)
            cached = columns.get(id(items)) if columns is not None else None
            if cached is None:
                cached = ([f"{it.task}/{it.item_id}" for it in items], [modality_length(it) for it in items])
                if columns is not None:
                    columns[id(items)] = cached
            item_ids, lengths = cached
            out.append(order_fingerprint(item_ids, stage_order(cfg, s, len(items), lengths=lengths)[0]))
    return out


def optimizer_steps_before(cfg: RunConfig, stage_index: int, n_items: Callable[[int], int], world: int = 1) -> int:
    """Optimizer steps of the sequence stages before `stage_index` (the x axis trackers log against);
    `n_items(s)` is the number of items stage `s` trains on."""
    return sum(
        stage_order(cfg, i, n_items(i), world=world)[1]
        for i in range(stage_index)
        if cfg.train.stages[i].kind.on_sequences
    )
