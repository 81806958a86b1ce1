"""A NaN injected into training is caught at its step; `stop` keeps the last good checkpoint, `skip` drops updates."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from vlmlab import checkpoint as ckpt
from vlmlab import io
from vlmlab.config import config_from_dict
from vlmlab.runs import RunDir
from vlmlab.train import trainer as trainer_mod
from vlmlab.train.trainer import Trainer
from vlmlab.training_step import NumericalFault


def _inject(monkeypatch, at_calls: set[int], where: str = "loss"):
    """Make the projector output NaN (a NaN loss) or one LLM weight's gradient NaN on the given training calls."""
    real_build = trainer_mod.build_model
    calls = {"n": 0}

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)

        def forward_hook(module, inputs, output):
            if not module.training:
                return output
            calls["n"] += 1
            if where == "loss" and calls["n"] in at_calls:
                return output * float("nan")
            return output

        model.projector.register_forward_hook(forward_hook)
        if where == "grad":
            weight = next(p for n, p in model.llm.named_parameters() if n.endswith("q_proj.weight"))
            weight.register_hook(lambda g: g * float("nan") if calls["n"] in at_calls else g)
        return model

    monkeypatch.setattr(trainer_mod, "build_model", build)
    return calls


def _cfg(tiny_raw, **nonfinite):
    tiny_raw["train"]["checkpoint_every"] = 2
    if nonfinite:
        tiny_raw["train"]["on_nonfinite"] = nonfinite
    return config_from_dict(tiny_raw)


def _finite(run_dir, checkpoint):
    state = load_file(str(RunDir(run_dir).checkpoints / checkpoint / ckpt.WEIGHTS))
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tiny_raw, tmp_path, monkeypatch):
    _inject(monkeypatch, {2 + 3})  # align runs 2 steps, so call 5 is finetune step 3
    cfg = _cfg(tiny_raw)
    with pytest.raises(NumericalFault) as err:
        Trainer(cfg, tmp_path / "run").run_training()
    msg = str(err.value)
    assert msg.startswith("train.stages.1 (finetune) step 3: non-finite loss (nan)")
    assert (
        "last good checkpoint checkpoints/step-0100000002" in msg
        and "train.stages.1.lr: projector 0.001, llm 0.001" in msg
    )
    run = RunDir(tmp_path / "run")
    assert not run.final.exists()
    assert ckpt.latest_checkpoint(run.path).name == "step-0100000002" and _finite(run.path, "step-0100000002")
    # the fault is gone (e.g. the lr was lowered): --resume finishes from the kept checkpoint
    monkeypatch.undo()
    Trainer(cfg, run.path, resume=True).run_training()
    assert _finite(run.path, "final")


def test_nan_gradient_with_a_finite_loss_is_caught_too(tiny_raw, tmp_path, monkeypatch):
    _inject(monkeypatch, {2 + 1}, where="grad")
    with pytest.raises(NumericalFault, match=r"finetune\) step 1: non-finite gradient \(norm nan\)"):
        Trainer(_cfg(tiny_raw), tmp_path / "run").run_training()


def test_skip_policy_drops_the_bad_updates_then_stops_past_the_limit(tiny_raw, tmp_path, monkeypatch):
    _inject(monkeypatch, {2 + 1, 2 + 3})
    result = Trainer(_cfg(tiny_raw, policy="skip", max_skips=2), tmp_path / "ok").run_training()
    assert result.steps == 6 and _finite(tmp_path / "ok", "final")
    log = io.read_jsonl(RunDir(tmp_path / "ok").train_log)
    skipped = [r for r in log if r.get("event") == "skipped-step"]
    assert [(r["step"], r["skipped"]) for r in skipped] == [(1, 1), (3, 2)]
    finetune = {r["step"]: r["loss"] for r in log if r["stage"] == "finetune" and "loss" in r}
    assert [s for s, loss in finetune.items() if math.isnan(loss)] == [1, 3]  # a skipped step has no loss to log
    monkeypatch.undo()
    _inject(monkeypatch, {2 + 1, 2 + 3})
    with pytest.raises(
        NumericalFault, match=r"step 3: non-finite loss \(nan\) after skipping 1 \(train.on_nonfinite.max_skips\)"
    ):
        Trainer(_cfg(tiny_raw, policy="skip", max_skips=1), tmp_path / "stop").run_training()


def test_fault_from_the_cli_is_one_line_and_exit_1(tiny_raw, tmp_path, monkeypatch, capsys):
    from vlmlab.cli import main

    _inject(monkeypatch, {1})
    tiny_raw["train"]["checkpoint_every"] = 2
    io.write_yaml(tmp_path / "c.yaml", tiny_raw)
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "align) step 1: non-finite loss" in err and "Traceback" not in err


def test_the_advice_after_a_fault_can_be_followed_and_is_recorded(tiny_raw, tmp_path, monkeypatch, capsys):
    """The stop says: lower the learning rate or raise warmup, then --resume. Both are accepted on resume,
    recorded in the log and environment.json; a model change still is not."""
    from vlmlab.cli import main

    calls = _inject(monkeypatch, {2 + 3})  # finetune step 3, after the checkpoint at step 2
    tiny_raw["train"]["checkpoint_every"] = 2
    config, run = tmp_path / "c.yaml", RunDir(tmp_path / "run")
    io.write_yaml(config, tiny_raw)
    assert main(["train", str(config), "--out", str(run.path), "--no-eval"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "finetune) step 3: non-finite loss" in err and "--resume" in err
    assert "checkpoints/step-0100000002" in err

    tiny_raw["train"]["stages"][1]["lr"]["llm"] = 1e-4  # the advice
    tiny_raw["train"]["warmup_ratio"] = 0.25
    io.write_yaml(config, tiny_raw)
    calls["n"] = -100  # no more NaN
    assert main(["train", str(config), "--out", str(run.path), "--no-eval", "--resume"]) == 0
    text = " ".join(capsys.readouterr().err.split())
    assert "resuming from checkpoints/step-0100000002 with a changed recipe" in text
    changes = {"train.stages.1.lr.llm": [1e-3, 1e-4], "train.warmup_ratio": [0.03, 0.25]}
    events = [r for r in io.read_jsonl(run.train_log) if r.get("event") == "recipe-changed"]
    assert events == [{"event": "recipe-changed", "resumed_from": "checkpoints/step-0100000002", "changes": changes}]
    env = io.read_json(run.environment)
    assert env["recipe_changes"] == [{"resumed_from": "checkpoints/step-0100000002", "changes": changes}]

    (run.final / ckpt.STATE).unlink()  # as if stopped again: a model change is still refused on resume
    tiny_raw["model"]["llm"]["num_layers"] = 3
    io.write_yaml(config, tiny_raw)
    assert main(["train", str(config), "--out", str(run.path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--resume with a different config (model.llm.num_layers changed" in " ".join(err.split())
