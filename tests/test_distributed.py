"""Scale-out equivalence on CPU: 2 gloo processes x b = 1 process x 2b = 1 process x b with grad_accum 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from vlmlab import io
from vlmlab.config import config_from_dict
from vlmlab.evaluation.evaluate import evaluate_run
from vlmlab.runs import RunDir
from vlmlab.train.trainer import Trainer


def _decisive(raw: dict) -> dict:
    """Train far enough that answers are peaked: an almost uniform model (loss ~ ln V) has near-ties that float
    rounding between process counts can flip, which says nothing about equivalence."""
    raw["train"]["stages"][0].update(max_steps=4, lr={"projector": 1e-2})
    raw["train"]["stages"][1].update(max_steps=24, lr={"projector": 1e-2, "llm": 1e-2})
    return raw


def _losses(run: RunDir) -> list[tuple[str, int, float]]:
    return [(r["stage"], r["step"], r["loss"]) for r in io.read_jsonl(run.train_log) if "loss" in r]


def _assert_same_training(a: RunDir, b: RunDir) -> None:
    la, lb = _losses(a), _losses(b)
    assert [x[:2] for x in la] == [x[:2] for x in lb]
    assert [x[2] for x in la] == pytest.approx([x[2] for x in lb], rel=1e-5)
    pa, pb = pd.read_parquet(a.predictions()), pd.read_parquet(b.predictions())
    assert pa["item_id"].is_unique and list(pa["item_id"]) == list(pb["item_id"])  # none lost, none twice, same order
    assert list(pa["prediction"]) == list(pb["prediction"])
    assert pa["confidence"].to_numpy() == pytest.approx(pb["confidence"].to_numpy(), abs=1e-6)


def _single(tiny_raw, out, **train):
    _decisive(tiny_raw)
    tiny_raw["train"].update(train, threads=1)
    run = RunDir(out)
    Trainer(config_from_dict(tiny_raw), run.path).run_training()
    evaluate_run(run.path)
    return run


def test_grad_accumulation_equals_the_larger_batch(tiny_raw, tmp_path):
    import copy

    big = _single(copy.deepcopy(tiny_raw), tmp_path / "b16", batch_size=16)
    accum = _single(tiny_raw, tmp_path / "b8x2", batch_size=8, grad_accum=2)
    _assert_same_training(big, accum)


@pytest.mark.parametrize("data", ["easy-vqa", "grouped-mix-with-workers"])
def test_two_gloo_processes_equal_one_process_with_twice_the_batch(tiny_raw, tmp_path, data):
    import copy

    if data != "easy-vqa":  # conversations, text-only rows, grouped batches, max length, 1 worker per process
        from _mix import write_tiny_mix

        file = write_tiny_mix(tmp_path / "mix")
        tiny_raw["data"]["train"] = {"task": "llava-json", "split": "train", "path": str(file)}
        tiny_raw["data"]["workers"] = 1
        tiny_raw["train"].update(group_by_length="modality", max_length=40)
    tiny_raw["eval"]["batch_size"] = 10  # 24 items -> batches of 10, 10, 4: the last uneven, dealt to one process
    reference = _single(copy.deepcopy(tiny_raw), tmp_path / "one", batch_size=16)
    _decisive(tiny_raw)
    tiny_raw["train"].update(batch_size=8, threads=1)
    config = tmp_path / "two.yaml"
    io.write_yaml(config, tiny_raw)
    out = tmp_path / "two"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "vlmlab",
            "train",
            str(config),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, VLMLAB_NO_PROGRESS="1", OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("trained 28 steps") == 1  # one process reports (the console is stderr)
    two = RunDir(out)
    assert io.read_json(two.environment)["seed"] == 0
    _assert_same_training(reference, two)


def test_a_study_under_torchrun_writes_once_and_matches_one_process(tiny_raw, tmp_path):
    """`torchrun ... -m vlmlab study SPEC --only VARIANT`: the multi-GPU cluster job of docs/scaling.md, on CPU."""
    import copy

    import yaml

    from vlmlab.study.runner import run_study

    def spec(batch_size):
        base = _decisive(copy.deepcopy(tiny_raw))
        base["train"].update(batch_size=batch_size, threads=1)
        return {
            "name": "t",
            "base": base,
            "eval": {"blind": False},
            "factors": {
                "llm": {
                    "keys": ["model.llm.id"],
                    "levels": {"gen1": {"model.llm.id": "llama1-tiny"}, "gen3": {"model.llm.id": "llama3-tiny"}},
                }
            },
        }

    (tmp_path / "one.yaml").write_text(yaml.safe_dump(spec(16)))
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(spec(8)))
    reference = run_study(tmp_path / "one.yaml", tmp_path / "one")
    out = tmp_path / "two"
    for variant in ("gen1", "gen3"):  # one job per variant, each on 2 processes
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node",
                "2",
                "-m",
                "vlmlab",
                "study",
                str(tmp_path / "two.yaml"),
                "--out",
                str(out),
                "--only",
                variant,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=dict(os.environ, VLMLAB_NO_PROGRESS="1", OMP_NUM_THREADS="1"),
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    run_study(tmp_path / "two.yaml", out)  # the combine step: nothing left to train
    got, want = pd.read_parquet(out / "results.parquet"), pd.read_parquet(reference.dir.results)
    assert list(got["item_id"]) == list(want["item_id"]) and list(got["prediction"]) == list(want["prediction"])
    assert got["confidence"].to_numpy() == pytest.approx(want["confidence"].to_numpy(), abs=1e-6)
    assert io.read_json(out / "complete.json")["files"]


def test_shipped_accelerate_configs_parse_and_name_real_layer_classes():
    import importlib
    from pathlib import Path

    from accelerate.commands.config.config_args import ClusterConfig

    modules = {
        "LlamaDecoderLayer": "transformers.models.llama.modeling_llama",
        "CLIPEncoderLayer": "transformers.models.clip.modeling_clip",
        "SiglipEncoderLayer": "transformers.models.siglip.modeling_siglip",
        "ViTLayer": "transformers.models.vit.modeling_vit",
        "MambaMixer": "vlmlab.models.vision.mamba_blocks",
        "VSSBlock": "vlmlab.models.vision.ssm",
    }
    configs = sorted(Path(__file__).parents[1].glob("configs/accelerate/*.yaml"))
    assert {c.stem for c in configs} == {"ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"}
    for path in configs:
        cluster = ClusterConfig.from_yaml_file(str(path))
        assert cluster.num_processes == 8
        if cluster.fsdp_config:
            for name in cluster.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(","):
                module = importlib.import_module(modules[name])
                assert hasattr(module, name), name
