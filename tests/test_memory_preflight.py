"""The memory pre-flight: its estimates against measured peaks on tiny configs, and a refusal before anything is written.

The measured peak is the C heap in use sampled after every aten op (`vlmlab.measure.heap`) of one real
training step (forward, backward, AdamW step) or one evaluation batch, plus the weights; the estimate must
be within a factor of 2 of it either way (`FACTOR`).
"""

from __future__ import annotations

import copy

import pytest
import yaml

from vlmlab.cli import main
from vlmlab.config import config_from_dict
from vlmlab.data.dataset import VQADataset
from vlmlab.data.sources import load_training_items
from vlmlab.evaluation.generate import greedy_generate
from vlmlab.measure import heap
from vlmlab.models import footprint
from vlmlab.models.build import build_model, enable_gradient_checkpointing
from vlmlab.train.optim import apply_stage_freezing, build_optimizer

FACTOR = 2.0


def _measured_peak(model, step) -> int:
    """Weights plus the heap's growth at its highest while `step` runs."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) + heap.peak_growth(step)


VISIONS = {
    "vit": {"id": "vit", "patch_size": 8, "hidden_size": 64, "num_layers": 2, "num_heads": 4},
    "vim": {"id": "vim", "patch_size": 8, "hidden_size": 32, "num_layers": 2},
    "vmamba": {"id": "vmamba", "patch_size": 4, "hidden_size": 16, "depths": [1, 1], "tap_stage": 2},
}


def _setup(tiny_raw, vision: str, checkpointing: bool):
    raw = copy.deepcopy(tiny_raw)
    raw["model"]["vision"] = VISIONS[vision]
    raw["model"]["llm"].update(hidden_size=64, num_layers=2, num_heads=4)
    raw["data"]["image"]["size"] = 64
    raw["train"]["gradient_checkpointing"] = checkpointing
    raw["train"]["stages"][1]["lr"]["vision"] = 1e-3
    cfg = config_from_dict(raw)
    items = load_training_items(cfg)
    model = build_model(cfg, texts=[it.question for it in items] + [it.answer for it in items])
    if checkpointing:
        enable_gradient_checkpointing(model)
    data = VQADataset(items, model.llm, cfg.data.image, model.num_image_tokens, with_answers=True)
    longest = sorted(range(len(data)), key=lambda i: -data.length(i))  # the estimate is for the longest items
    return cfg, model, data, longest


@pytest.mark.skipif(not heap.available(), reason="measures the heap with glibc's mallinfo2")
@pytest.mark.parametrize("vision,checkpointing", [("vit", False), ("vit", True), ("vim", False), ("vmamba", False)])
def test_training_estimate_is_within_a_factor_of_the_measured_peak(tiny_raw, vision, checkpointing):
    cfg, model, data, longest = _setup(tiny_raw, vision, checkpointing)
    estimates = footprint.training_footprints(model, cfg, data.extent())
    for s, stage in enumerate(cfg.train.stages):  # align (tower frozen), finetune (tower trained)
        apply_stage_freezing(model, stage)
        optimizer = build_optimizer(model, stage, cfg.train)
        model.train()
        batch = data.collate([data[i] for i in longest[: cfg.train.batch_size]])

        def step(batch=batch, optimizer=optimizer):
            model(**batch.model_inputs(), labels=batch.labels).loss_sum.backward()
            optimizer.step()

        measured = _measured_peak(model, step)
        est = estimates[s].total - estimates[s].parts.get("decoded images", 0)  # the dataset's cache is not in it
        model.zero_grad(set_to_none=True)
        assert measured / FACTOR <= est <= measured * FACTOR, (stage.name, est, measured, estimates[s].describe())


@pytest.mark.skipif(not heap.available(), reason="measures the heap with glibc's mallinfo2")
@pytest.mark.parametrize("vision", ["vit", "vmamba"])
def test_evaluation_estimate_is_within_a_factor_of_the_measured_peak(tiny_raw, vision):
    cfg, model, _, _ = _setup(tiny_raw, vision, False)
    model.eval()
    items = load_training_items(cfg)
    data = VQADataset(items, model.llm, cfg.data.image, model.num_image_tokens, with_answers=False)
    longest = sorted(range(len(data)), key=lambda i: -data.length(i))
    batch = data.collate([data[i] for i in longest[: cfg.eval.batch_size]])
    est = footprint.eval_footprint(model, cfg, data.length(longest[0])).total
    measured = _measured_peak(model, lambda: greedy_generate(model, batch, cfg.eval.max_new_tokens))
    assert measured / FACTOR <= est <= measured * FACTOR, (est, measured)


def test_gradient_checkpointing_lowers_the_estimate(tiny_raw):
    cfg, model, data, _ = _setup(tiny_raw, "vit", False)
    a = footprint.training_footprints(model, cfg, data.extent())[1].parts
    cfg, model, data, _ = _setup(tiny_raw, "vit", True)
    b = footprint.training_footprints(model, cfg, data.extent())[1].parts
    assert b["LLM activations"] < a["LLM activations"] and b["vision activations"] < a["vision activations"]


def test_a_run_that_cannot_fit_is_refused_before_its_directory_exists(capsys, tiny_raw, tmp_path, monkeypatch):
    """The issue's case in small: a large image at patch size 1 is refused with the keys that drive it."""
    monkeypatch.setattr(footprint, "available_bytes", lambda: 256 * 2**20)  # a 256 MiB machine
    tiny_raw["data"]["image"]["size"] = 128
    tiny_raw["model"]["vision"]["patch_size"] = 1
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_raw))
    code = main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 5 and len(err.splitlines()) == 1, err
    assert err.startswith("error: memory pre-flight: the run 'tiny' would need about")
    assert "data.image.size" in err and "model.vision.patch_size" in err and "train.batch_size" in err
    assert "16,384 vision tokens" in err and "train.memory_check: false" in err
    assert not (tmp_path / "run").exists()


def test_memory_check_false_skips_the_pre_flight(capsys, tiny_raw, tmp_path, monkeypatch):
    monkeypatch.setattr(footprint, "available_bytes", lambda: 2**20)  # 1 MiB: the tiny run does not "fit"
    tiny_raw["train"]["stages"] = [{"name": "align", "max_steps": 1, "lr": {"projector": 1e-3}}]
    tiny_raw["data"]["train"]["limit"] = 8
    tiny_raw["data"]["eval"][0]["limit"] = 2
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_raw))
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 5
    tiny_raw["train"]["memory_check"] = False  # the user who knows better
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_raw))
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 0


def test_a_typo_in_epochs_warns_with_the_step_count(capsys, tiny_raw, tmp_path):
    from vlmlab.train.trainer import LONG_STAGE_STEPS, Trainer

    tiny_raw["train"]["stages"][0] = {"name": "align", "epochs": 1e9, "lr": {"projector": 1e-3}}
    cfg = config_from_dict(tiny_raw)
    trainer = Trainer(cfg, tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):  # stop right after the pre-flight: the warning is what is tested

        def stop(_model):
            raise KeyboardInterrupt

        trainer._write_run_files = stop
        trainer.run_training()
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert "train.stages.0.epochs=1e+09 means 8,000,000,000 optimizer steps over 64 items" in out
    assert 8_000_000_000 > LONG_STAGE_STEPS
