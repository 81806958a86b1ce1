"""How DDP, FSDP and DeepSpeed ZeRO divide a training footprint (`models.footprint`) over the processes.

The pre-flight estimates one process holding everything (weights, gradients, AdamW state). Per process:

- `ddp`: a full replica, plus DDP's gradient buckets (one more copy of the trainable gradients, fp32).
- `zero2`: full weights; gradients and AdamW state (and the update's temporaries) split N ways.
- `fsdp` (FSDP2 full shard) and `zero3`: weights, gradients and AdamW state all split N ways, plus the
  largest wrapped unit (a decoder layer or tower block) gathered whole, twice (the one computing and the
  one prefetched).

Activations, logits and decoded images are per process under every strategy (data parallelism). This
follows "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models" (Rajbhandari et al., arXiv
1910.02054), whose stage 2 and 3 are the rows above; FSDP's full shard is ZeRO-3's layout.
"""

from __future__ import annotations

from torch import nn

from vlmlab.models.footprint import Footprint

STRATEGIES = ("ddp", "fsdp", "zero2", "zero3")
SHARDS_WEIGHTS = ("fsdp", "zero3")
SHARDS_STATE = ("fsdp", "zero2", "zero3")
STATE_PARTS = ("gradients + AdamW state", "AdamW update temporaries")
GRADIENT_BYTES = 4  # gradients are reduced and kept in fp32 (FSDP's reduce dtype, DDP's buckets)


def largest_unit_bytes(model: nn.Module) -> int:
    """Bytes of the largest block a sharding engine gathers at once: the biggest member of any ModuleList
    (decoder layers, tower blocks); the whole model when it has none."""
    best = 0
    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            for block in module:
                best = max(best, sum(p.numel() * p.element_size() for p in block.parameters()))
    return best or sum(p.numel() * p.element_size() for p in model.parameters())


def per_process(fp: Footprint, strategy: str, processes: int, unit_bytes: int = 0, trained: int = 0) -> Footprint:
    """The footprint one of `processes` processes holds under `strategy` (`fp` is the unsharded estimate;
    `trained` the trainable parameter count, for DDP's buckets; `unit_bytes` the largest gathered block)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    n = max(1, processes)
    out = Footprint(f"{fp.phase}, {strategy} over {n} process{'es' if n > 1 else ''}", unknown=list(fp.unknown))
    for name, nbytes in fp.parts.items():
        keys = fp.keys[name]
        if name == "weights" and strategy in SHARDS_WEIGHTS and n > 1:
            out.add("weights (own shard)", nbytes // n, keys)
            out.add("gathered unit", min(nbytes, 2 * unit_bytes), f"{keys} (the largest block, gathered)")
        elif name in STATE_PARTS and strategy in SHARDS_STATE and n > 1:
            out.add(f"{name} (own shard)", nbytes // n, keys)
        else:
            out.add(name, nbytes, keys)
    if strategy == "ddp" and n > 1:
        out.add("DDP gradient buckets", trained * GRADIENT_BYTES, "the trainable parameters (train.stages.N.lr)")
    return out
