"""Sharding engines (FSDP2, DeepSpeed): the trainer's adaptations, checked on CPU without launching them.

The full runs (accelerate launch with each shipped config, on a GPU) are `benchmarks/check_scaleout.py`;
its last measurement is in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from vlmlab.config import config_from_dict
from vlmlab.errors import ConfigError
from vlmlab.models.build import build_model
from vlmlab.train import engines

WRAP = ["LlamaDecoderLayer", "CLIPEncoderLayer", "SiglipEncoderLayer", "ViTLayer", "MambaMixer", "VSSBlock"]


def fsdp_accelerator(names=WRAP):
    plugin = SimpleNamespace(transformer_cls_names_to_wrap=list(names), mixed_precision_policy=None)
    return SimpleNamespace(distributed_type=DistributedType.FSDP, state=SimpleNamespace(fsdp_plugin=plugin))


def deepspeed_accelerator():
    plugin = SimpleNamespace(deepspeed_config={"zero_optimization": {"stage": 3}, "gradient_accumulation_steps": 1})
    return SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, state=SimpleNamespace(deepspeed_plugin=plugin))


@pytest.fixture
def model_and_cfg(tiny_raw):
    tiny_raw["train"]["mixed_precision"] = "bf16"
    cfg = config_from_dict(tiny_raw)
    return build_model(cfg, texts=["what colour is the shape?", "red", "blue"]), cfg


def test_fsdp_wraps_only_the_blocks_this_model_has_and_finds_them_again_once_renamed(model_and_cfg):
    model, cfg = model_and_cfg
    acc = fsdp_accelerator()
    engines.configure(acc, cfg, model)
    plugin = acc.state.fsdp_plugin
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer", "ViTLayer"]
    assert plugin.mixed_precision_policy.param_dtype == torch.bfloat16
    assert plugin.mixed_precision_policy.reduce_dtype == torch.float32  # gradients reduced in the params' dtype
    for layer in model.llm.decoder.layers:  # what fully_shard does to a wrapped block's class
        layer.__class__ = type("FSDPLlamaDecoderLayer", (type(layer),), {})
    engines.before_prepare(acc, model)  # the next stage re-prepares the sharded model
    assert plugin.transformer_cls_names_to_wrap == ["FSDPLlamaDecoderLayer", "ViTLayer"]


def test_fsdp_wrap_list_naming_no_block_of_the_model_is_one_line(model_and_cfg):
    model, cfg = model_and_cfg
    with pytest.raises(ConfigError, match=r"fsdp_transformer_layer_cls_to_wrap: none of GPT2Block .*LlamaDecoderLayer"):
        engines.configure(fsdp_accelerator(["GPT2Block"]), cfg, model)


def test_deepspeed_takes_the_batch_settings_from_the_run_config(model_and_cfg, tiny_raw):
    model, _ = model_and_cfg
    tiny_raw["train"].update(batch_size=6, grad_accum=3, max_grad_norm=0.5)
    acc = deepspeed_accelerator()
    engines.configure(acc, config_from_dict(tiny_raw), model)
    ds = acc.state.deepspeed_plugin.deepspeed_config
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["gradient_clipping"]) == (
        6,
        3,
        0.5,
    )
    assert (
        engines.backward_scale(acc, 3) == 3.0
    )  # DeepSpeed divides by its accumulation steps; vlmlab's loss is the step mean


@pytest.mark.parametrize(
    "change, key",
    [
        ({"checkpoint_every": 2}, "train.checkpoint_every"),
        ({"on_nonfinite": {"policy": "skip"}}, "train.on_nonfinite.policy"),
    ],
)
def test_options_a_sharded_engine_cannot_honour_are_refused(model_and_cfg, tiny_raw, change, key):
    model, _ = model_and_cfg
    tiny_raw["train"].update(change)
    with pytest.raises(ConfigError, match=key):
        engines.configure(deepspeed_accelerator(), config_from_dict(tiny_raw), model)


def test_plain_runs_are_left_alone(model_and_cfg):
    model, cfg = model_and_cfg
    acc = SimpleNamespace(distributed_type=DistributedType.NO)
    engines.configure(acc, cfg, model)
    assert not engines.sharded(acc) and engines.backward_scale(acc, 4) == 1.0
    assert engines.full_state_dict(acc, None) is None


def test_unfreezing_a_part_of_an_fsdp2_model_gives_full_precision_gradients():
    """FSDP2 records gradient dtypes at its first forward from the parameters that trained then. A part frozen in
    stage 1 and trained in stage 2 got bf16 gradients for fp32 weights (an error on the first GPU run);
    engines.after_freezing re-reads them. Real fully_shard on CPU (gloo, one process), in a subprocess."""
    code = textwrap.dedent("""
        import os, torch, torch.distributed as dist
        from types import SimpleNamespace
        from accelerate.utils import DistributedType
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        from vlmlab.train import engines

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("PORT", "29561"))
        dist.init_process_group("gloo", rank=0, world_size=1)
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))

        def build(freeze_first):
            torch.manual_seed(0)
            m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
            m[0].requires_grad_(not freeze_first)
            fully_shard(m[0], mp_policy=mp)
            fully_shard(m, mp_policy=mp)
            return m

        reference = build(False)
        reference(x).sum().backward()
        staged = build(True)
        staged(x).sum().backward()               # stage 1: the first layer is frozen
        staged[0].requires_grad_(True)           # stage 2 trains it
        engines.after_freezing(SimpleNamespace(distributed_type=DistributedType.FSDP), staged)
        staged.zero_grad()
        staged(x).sum().backward()
        got, want = staged[0].weight.grad.to_local(), reference[0].weight.grad.to_local()
        assert got.dtype == torch.float32, got.dtype
        assert torch.equal(got, want)
        print("ok")
    """)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, "PORT": port}
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
