"""What the trainer does differently under a sharding engine (FSDP, DeepSpeed): wrap policy, DeepSpeed's
batch settings, gathered weights, and the options that need the full optimizer state on one process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from vlmlab.errors import ConfigError


def sharded(acc: Accelerator) -> bool:
    """True when parameters, gradients or optimizer state live in pieces across processes."""
    return acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def deepspeed(acc: Accelerator) -> bool:
    return acc.distributed_type == DistributedType.DEEPSPEED


def strategy(acc: Accelerator) -> str:
    """How the launcher's engine holds the model (`vlmlab.models.sharding`): `ddp` (a full replica per process),
    `fsdp` (full shard), `zero2` (DeepSpeed stages 1-2: optimizer state and gradients sharded) or `zero3`."""
    if acc.distributed_type == DistributedType.FSDP:
        return "fsdp"
    if deepspeed(acc):
        stage = int(acc.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0))
        return "zero3" if stage >= 3 else "zero2" if stage >= 1 else "ddp"
    return "ddp"


def keeps_wrapping(acc: Accelerator) -> bool:
    """FSDP2 shards the model in place, once; the next stage re-prepares it as it is (DDP / DeepSpeed wrap anew)."""
    return acc.distributed_type == DistributedType.FSDP


def configure(acc: Accelerator, cfg, model: torch.nn.Module) -> None:
    """Adapt the launcher's engine config to this model and recipe; refuse what the engine cannot honour."""
    if not sharded(acc):
        return
    engine = "DeepSpeed" if deepspeed(acc) else "FSDP"
    if cfg.train.checkpoint_every:
        raise ConfigError(
            "train.checkpoint_every",
            f"mid-stage checkpoints hold the full optimizer state, which vlmlab "
            f"gathers only without {engine}; remove the key (each stage still ends with a checkpoint)",
        )
    if deepspeed(acc):
        if cfg.train.on_nonfinite.policy == "skip":
            raise ConfigError(
                "train.on_nonfinite.policy",
                "skip is not possible under DeepSpeed, whose engine applies the step inside backward; use stop",
            )
        ds = acc.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = cfg.train.batch_size
        ds["gradient_accumulation_steps"] = cfg.train.grad_accum
        ds["gradient_clipping"] = cfg.train.max_grad_norm or 0.0
        return
    plugin = acc.state.fsdp_plugin
    if cfg.train.mixed_precision != "no":  # compute in bf16/fp16, but reduce gradients in fp32, the params' dtype
        from torch.distributed.fsdp import MixedPrecisionPolicy

        low = torch.bfloat16 if cfg.train.mixed_precision == "bf16" else torch.float16
        plugin.mixed_precision_policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)
    if not hasattr(plugin, "vlmlab_wrap"):  # the launcher's list, kept: each run in the process filters it anew
        plugin.vlmlab_wrap = plugin.transformer_cls_names_to_wrap or []
    before_prepare(acc, model)


def before_prepare(acc: Accelerator, model: torch.nn.Module) -> None:
    """Point FSDP's wrap policy at the classes as they are named in `model` now.

    One config file lists the blocks of every LLM and tower; those absent from this model are dropped. A
    later stage re-prepares the already-sharded model, whose blocks FSDP2 renamed (FSDPLlamaDecoderLayer):
    a block matches a listed name through its class's bases.
    """
    if acc.distributed_type != DistributedType.FSDP:
        return
    plugin = acc.state.fsdp_plugin
    wanted = plugin.vlmlab_wrap
    names = sorted(
        {type(m).__name__ for m in model.modules() if any(base.__name__ in wanted for base in type(m).__mro__)}
    )
    if wanted and not names:
        raise ConfigError(
            "fsdp_transformer_layer_cls_to_wrap",
            f"none of {', '.join(wanted)} is in this model (its blocks: {', '.join(sorted(block_classes(model)))})",
        )
    plugin.transformer_cls_names_to_wrap = names or None


def after_freezing(acc: Accelerator, model: torch.nn.Module) -> None:
    """A later stage unfroze parts of an FSDP2-sharded model: let each shard group re-read which of its
    parameters train. FSDP2 records the gradient dtypes at its first forward, from the parameters that
    trained then; a group frozen in stage 1 would otherwise hand stage 2 low-precision gradients."""
    if acc.distributed_type != DistributedType.FSDP:
        return
    for module in model.modules():
        state = module._get_fsdp_state() if hasattr(module, "_get_fsdp_state") else None
        group = getattr(state, "_fsdp_param_group", None)
        if group is not None:
            group._init_mp_dtypes()


def block_classes(model: torch.nn.Module) -> set[str]:
    """Class names of the repeated blocks (elements of a ModuleList): the natural FSDP wrap units."""
    return {type(m).__name__ for lst in model.modules() if isinstance(lst, torch.nn.ModuleList) for m in lst}


@contextlib.contextmanager
def accumulation_boundary(acc: Accelerator, last: bool) -> Iterator[None]:
    """Tell DeepSpeed whether this micro-batch ends the step (its engine steps inside backward); a no-op otherwise."""
    if not deepspeed(acc) or last:
        yield
        return
    acc.gradient_state._set_sync_gradients(False)
    try:
        yield
    finally:
        acc.gradient_state._set_sync_gradients(True)


def backward_scale(acc: Accelerator, accum: int) -> float:
    """DeepSpeed divides each micro-batch loss by its accumulation steps; vlmlab's loss is already the step mean."""
    return float(accum) if deepspeed(acc) else 1.0


def full_state_dict(acc: Accelerator, wrapped: torch.nn.Module | None) -> dict[str, torch.Tensor] | None:
    """The whole model's weights. Under FSDP / DeepSpeed every process must call this (it gathers the shards);
    the result is meant for the main process. None means: read `model.state_dict()` as usual."""
    if not sharded(acc) or wrapped is None:
        return None
    return acc.get_state_dict(wrapped)
