"""Tiny train -> eval round trips: files, determinism, save/load, resume."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

from vlmlab import checkpoint as ckpt
from vlmlab.config import config_from_dict
from vlmlab.data.dataset import VQADataset
from vlmlab.data.eval_mode import BLIND
from vlmlab.data.sources import load_source
from vlmlab.evaluation.evaluate import RECORD_COLUMNS, evaluate_run
from vlmlab.runs import RunDir, load_run_model
from vlmlab.train.trainer import Trainer


def _train(cfg, out, resume=False):
    return Trainer(cfg, out, resume=resume).run_training()


def test_round_trip_writes_the_run_layout(tiny_cfg, tmp_path):
    result = _train(tiny_cfg, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    assert result.steps == 6
    assert result.trainable["align"]["llm"] == 0 and result.trainable["align"]["projector"] > 0
    assert result.trainable["finetune"]["vision"] == 0  # vision tower frozen by default
    metrics = evaluate_run(run.path)
    for path in (
        run.config,
        run.final / ckpt.WEIGHTS,
        run.predictions(),
        run.metrics(),
        run.train_log,
        run.tokenizer / "tokenizer.json",
    ):
        assert path.exists(), path
    records = pd.read_parquet(run.predictions())
    assert list(records.columns) == RECORD_COLUMNS and len(records) == 24
    assert records["confidence"].between(0, 1).all()
    assert metrics["overall"]["n"] == 24
    assert abs(metrics["overall"]["accuracy"] - records["score"].mean()) < 1e-12
    assert set(metrics["per_category"]) <= {"easy-vqa/shape", "easy-vqa/color", "easy-vqa/yes/no"}
    log = [json.loads(line) for line in run.train_log.read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 1, 2, 3, 4]
    blind = evaluate_run(run.path, mode=BLIND)
    assert pd.read_parquet(run.predictions(BLIND))["blind"].all()
    gap = blind["visual_reliance_gap"]["easy-vqa"]
    assert gap["n"] == 24
    assert abs(gap["gap"] - (metrics["overall"]["accuracy"] - blind["overall"]["accuracy"])) < 1e-12
    # a blind run on a subset compares like with like: only the items both runs scored
    from vlmlab.config import DataSource

    subset = evaluate_run(run.path, [DataSource(task="easy-vqa", split="test", limit=10)], mode=BLIND)
    assert subset["visual_reliance_gap"]["easy-vqa"]["n"] == 10


def test_same_seed_twice_gives_identical_predictions(tiny_cfg, tmp_path):
    for name in ("a", "b"):
        _train(tiny_cfg, tmp_path / name)
        evaluate_run(tmp_path / name)
    a, b = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    assert a.predictions().read_bytes() == b.predictions().read_bytes()  # byte-identical, not just equal frames
    env = json.loads(a.environment.read_text())
    assert env["seed"] == 0 and env["resumed_on"] == []
    assert env["trained_on"]["packages"]["torch"].startswith(torch.__version__.split("+")[0])
    assert {"git_sha", "python", "platform", "cpu_count", "gpu"} <= set(env["trained_on"])
    wa = ckpt.load_file_state(tmp_path / "a")
    wb = ckpt.load_file_state(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_save_then_load_gives_identical_logits(tiny_cfg, tmp_path):
    result = _train(tiny_cfg, tmp_path / "run")
    trained = result.model.eval()
    device = next(trained.parameters()).device  # the trainer's device (a GPU when there is one)
    loaded, cfg = load_run_model(tmp_path / "run", device=device)
    _, items = load_source(cfg.data.eval[0], "data.eval.0")
    data = VQADataset(items[:5], loaded.llm, cfg.data.image, loaded.num_image_tokens, with_answers=False)
    batch = data.collate([data[i] for i in range(5)]).to(device)
    with torch.no_grad():
        assert torch.equal(trained.logits(**batch.model_inputs()), loaded.logits(**batch.model_inputs()))


def test_resume_from_a_mid_stage_checkpoint_matches_uninterrupted(tiny_raw, tmp_path):
    tiny_raw["train"]["checkpoint_every"] = 2
    cfg = config_from_dict(tiny_raw)
    _train(cfg, tmp_path / "full")
    _train(cfg, tmp_path / "cut")
    cut = RunDir(tmp_path / "cut")
    # simulate a crash after finetune step 2: drop everything written after that checkpoint
    shutil.rmtree(cut.final)
    for c in cut.checkpoints.glob("step-*"):
        if c.name != "step-0100000002":
            shutil.rmtree(c)
    assert ckpt.latest_checkpoint(cut.path).name == "step-0100000002"
    _train(cfg, cut.path, resume=True)
    wa = ckpt.load_file_state(tmp_path / "full")
    wb = ckpt.load_file_state(cut.path)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_train_refuses_an_existing_run_without_resume(tiny_cfg, tmp_path):
    from vlmlab.errors import UserError

    _train(tiny_cfg, tmp_path / "run")
    with pytest.raises(UserError, match="already holds a run"):
        _train(tiny_cfg, tmp_path / "run")


def test_lora_finetune_trains_adapters_only(tiny_raw, tmp_path):
    tiny_raw["train"]["stages"][1]["lora"] = {"r": 4}
    cfg = config_from_dict(tiny_raw)
    result = _train(cfg, tmp_path / "run")
    lora_params = sum(p.numel() for n, p in result.model.llm.named_parameters() if "lora_" in n)
    assert 0 < result.trainable["finetune"]["llm"] == lora_params
    loaded, _ = load_run_model(tmp_path / "run")  # the adapters are re-injected before loading
    assert any("lora_" in n for n, _ in loaded.named_parameters())


def test_vision_pretrain_stage_trains_only_the_tower_and_learns_colour(tiny_raw, tmp_path):
    tiny_raw["data"]["train"]["limit"] = 400
    tiny_raw["train"]["stages"] = [
        {"name": "vision-pretrain", "max_steps": 100, "batch_size": 32, "lr": {"vision": 3e-3}, "augment": ["hflip"]},
        {"name": "align", "max_steps": 1, "lr": {"projector": 1e-3}},
    ]
    cfg = config_from_dict(tiny_raw)
    from vlmlab.models.build import build_model
    from vlmlab.train.trainer import tokenizer_texts

    _, items = load_source(cfg.data.train[0], "data.train.0")
    before = build_model(cfg, texts=tokenizer_texts(items)).state_dict()
    result = _train(cfg, tmp_path / "run")
    after = {k: v.cpu() for k, v in result.model.state_dict().items()}
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"vision", "projector"}  # the LLM never moved
    assert result.vision_pretrain["train_top1/color"] > 0.5  # 8 colours: chance is 1/8
    assert 0 <= result.vision_pretrain["train_top1/shape"] <= 1


def test_bf16_autocast_trains_and_evaluates(tiny_raw, tmp_path):
    tiny_raw["train"]["mixed_precision"] = "bf16"
    cfg = config_from_dict(tiny_raw)
    result = _train(cfg, tmp_path / "run")
    assert result.steps == 6
    metrics = evaluate_run(tmp_path / "run")
    assert metrics["overall"]["n"] == 24
