"""`vlmlab study --plan`: the shipped recipes' plans against hand-worked figures, the meta-device model against the
real one, and the power formulas against simulation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from vlmlab.cli import main
from vlmlab.config import config_from_dict
from vlmlab.models.build import build_model
from vlmlab.models.footprint import Extent, Footprint, training_footprints
from vlmlab.models.routing.cost import Geometry, layer_flops
from vlmlab.models.sharding import per_process
from vlmlab.plan.cost import Setting, plan_variant
from vlmlab.plan.hardware import hardware
from vlmlab.plan.pilot import comparisons, paired_noise, power_table
from vlmlab.plan.power import minimum_detectable_effect, questions_needed, seeds_needed, standard_error
from vlmlab.plan.shapes import shape_model
from vlmlab.plan.study import plan_config, plan_study
from vlmlab.study.launcher import LauncherSpec
from vlmlab.study.spec import study_spec_from_dict

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
A100_X8_FSDP = LauncherSpec(gpu="a100-80gb", gpus_per_node=8, strategy="fsdp")


# ----- LLaVA-1.5-7B (examples/recipes/llava-1.5-7b.yaml), nothing of it on this machine -------------------------
@pytest.fixture(scope="module")
def llava():
    return plan_config(ROOT / "examples/recipes/llava-1.5-7b.yaml", A100_X8_FSDP).variants[0]


def test_llava_parameters_are_the_published_counts(llava):
    # Vicuna-7B (LLaMA-2-7B shape): 32 x (4 x 4096^2 + 3 x 4096 x 11008 + 2 x 4096) + 2 x 32000 x 4096 + 4096
    #   = 32 x 202,383,360 + 262,144,000 + 4,096 = 6,738,415,616
    # CLIP ViT-L/14-336 tower: 303,507,456 (HF CLIPVisionModel); gelu-mlp: 1024x4096 + 4096 + 4096x4096 + 4096
    assert llava.parameters == {"vision": 303_507_456, "projector": 20_979_712, "llm": 6_738_415_616, "routing": 0}
    align, finetune = llava.stages
    assert align.trained == 20_979_712  # the projector
    assert finetune.trained == 6_738_415_616 + 20_979_712  # LLM + projector; the tower stays frozen


def test_llava_steps_and_flops_per_sample(llava):
    align, finetune = llava.stages
    # steps: ceil(558,128 / (32 x 8)) = 2,181 and ceil(665,298 / (16 x 8)) = 5,198
    assert (align.steps, align.global_batch, finetune.steps, finetune.global_batch) == (2181, 256, 5198, 128)
    # one decoder layer over T tokens: 2 x 202,375,168 linear weights x T + 4 x T^2 x 4096 (QK^T and AV)
    # finetune, T = 576 + 250 text: 345.50 GFLOPs x 32 = 11.056 T; text-only rows (6%), T = 250: 3.271 T
    # -> forward 0.94 x 11.056 + 0.06 x 3.271 = 10.589 T; backward 2x (weights train), recompute 1x: 4 x 10.589
    # + LM head 2 x 4096 x 32000 x 120 supervised tokens x 3 (fwd, dX, dW) = 0.094 T
    # + frozen tower forward 0.94 x 381.9 G = 0.359 T (counted) + projector 2 x 0.94 x 2 x 20.97 M x 576 = 0.045 T
    assert finetune.flops.parts["LLM forward"] == pytest.approx(10.589e12, rel=1e-3)
    assert finetune.flops.total == pytest.approx(42.85e12, rel=2e-3)
    # align, T = 576 + 70: 268.3 G x 32 = 8.586 T forward; a frozen LLM passes gradients back once (1x) and is
    # recomputed once: 3 x 8.586 = 25.76 T, + tower 0.382 T + projector 0.048 T + head 0.010 T
    assert align.flops.parts["LLM forward"] == pytest.approx(8.586e12, rel=1e-3)
    assert align.flops.total == pytest.approx(26.20e12, rel=2e-3)


def test_llava_inference_flops_are_pyramiddrops_anchor_in_flops():
    # PyramidDrop's table gives LLaVA-1.5-7B 3.82 TFLOPs per inference: multiply-adds of the 32 layers over the
    # 576 vision tokens, n(4d^2 + 3dm) + 2n^2 d per layer. vlmlab counts 2 FLOPs per multiply-add: 7.64 TFLOPs.
    g = Geometry(layers=32, hidden=4096, ffn=11008, heads=32, kv_heads=32, vision=576, text=0)
    assert 32 * layer_flops(g, 576, 576) == pytest.approx(2 * 3.82e12, rel=5e-3)


def test_llava_memory_per_gpu_under_fsdp(llava):
    finetune = llava.stages[1]
    m = finetune.memory.parts
    # weights: 6,738,415,616 x 2 (bf16) + (303,507,456 + 20,979,712) x 4 (fp32) = 14,774,779,904 B, / 8 GPUs
    assert m["weights (own shard)"] == 14_774_779_904 // 8
    # gradients + AdamW: 12 B x 6,759,395,328 trained / 8 = 10,139,092,992 B (9.44 GiB)
    assert m["gradients + AdamW state (own shard)"] == 12 * 6_759_395_328 // 8
    # the largest block gathered twice: a decoder layer, 202,383,360 x 2 B x 2 = 809,533,440 B
    assert m["gathered unit"] == 809_533_440
    # activations, checkpointed, micro-batch 16 at train.max_length 2048, bf16: per row 32 x 2048 x 4096 (layer
    # inputs) + 2048 x (10 x 4096 + 4 x 11008 + 64) (one layer recomputed) + 576 x (1024 + 2 x 4096) (projector)
    per_row = 32 * 2048 * 4096 + 2048 * (10 * 4096 + 4 * 11008 + 2 * 32) + 576 * (1024 + 2 * 4096)
    assert m["LLM activations"] == 16 * per_row * 2
    assert finetune.memory.total / GIB == pytest.approx(28.50, abs=0.01)
    # one process holding it all (DDP) would need 114.5 GiB: it does not fit an 80 GB card
    assert finetune.unsharded.total / GIB == pytest.approx(114.48, abs=0.01)
    assert llava.fits


def test_llava_gpu_hours_against_the_published_104(llava):
    # 2,181 x 256 x 26.20 T + 5,198 x 128 x 42.85 T = 4.31e19 FLOPs; at 40% of an A100's 312 TFLOP/s: 96.0 h,
    # + 0.55 h of evaluation. PyramidDrop's table: ~104 A100-hours (our 96.6 implies an MFU of 0.37 for that).
    assert llava.train_flops == pytest.approx(4.314e19, rel=2e-3)
    assert llava.gpu_hours == pytest.approx(96.6, abs=0.3)
    assert llava.wall_hours == pytest.approx(96.6 / 8, abs=0.1)


# ----- paper B at scale: nine towers, two seeds (examples/studies/ssm-towers-gpu.yaml) ----------------------------
def test_paper_b_study_plan():
    plan = plan_study(ROOT / "examples/studies/ssm-towers-gpu.yaml")
    assert plan.runs == 18 and plan.hardware.name == "a100-80gb"
    by = {v.name: v for v in plan.variants}
    assert len(by) == 9 and all(v.fits for v in plan.variants)
    vmamba = by["vmamba-s"]
    # VMamba-S to stage 3 (35.4 M: stages 1-3 of the 50 M model), 196 tokens at 224 px: the prompt's prefill over
    # 196 + 60 tokens is 32 x (2 x 202.375 M x 256 + 4 x 256^2 x 4096) = 3.350 T for every tower
    assert vmamba.parameters["vision"] == pytest.approx(35.4e6, rel=1e-2)
    assert all(v.prefill_flops == pytest.approx(3.350e12, rel=1e-3) for v in plan.variants)
    (stage,) = vmamba.stages
    # T = 196 + 250: 183.78 G x 32 = 5.881 T; mixed with 6% text-only rows 5.724 T; x 4 (fwd, 2x bwd, recompute)
    # + head 0.094 T + VMamba forward 0.94 x 16.9 G (counted) + projector 2 x 6.8 G = 23.02 T per sample
    assert stage.flops.total == pytest.approx(23.02e12, rel=2e-3)
    assert stage.steps == 5198 and stage.trained == 6_738_415_616 + by["vmamba-s"].parameters["projector"]
    # 5,198 x 128 x 23.02 T = 1.53e19 FLOPs = 34.1 A100-hours at 40% (+ 0.4 h evaluation) per run; 18 runs
    assert vmamba.gpu_hours == pytest.approx(34.6, abs=0.3)
    assert plan.gpu_hours == pytest.approx(622, abs=5)
    assert stage.memory.total / GIB == pytest.approx(29.25, abs=0.05)


# ----- the meta-device model is the real model -------------------------------------------------------------------
def test_shape_model_equals_the_built_model(tiny_cfg):
    """Parameters and the memory pre-flight's estimate, from shapes only, equal the real model's."""
    from vlmlab.data.sources import load_training_items
    from vlmlab.train.trainer import tokenizer_texts

    texts = tokenizer_texts(load_training_items(tiny_cfg))
    real = build_model(tiny_cfg, texts=texts)
    meta = shape_model(tiny_cfg, lambda: texts).model
    for part in ("vision", "projector", "llm", "routing"):
        assert sum(p.numel() for p in getattr(meta, part).parameters()) == sum(
            p.numel() for p in getattr(real, part).parameters()
        )
    extent = Extent(tokens=80, answer_tokens=4, prompt_tokens=70, images=64, image_bytes=64 * 3 * 32 * 32)
    assert [f.parts for f in training_footprints(meta, tiny_cfg, extent)] == [
        f.parts for f in training_footprints(real, tiny_cfg, extent)
    ]


def test_plan_of_a_tiny_run_counts_what_the_trainer_runs(tiny_raw, tmp_path):
    """Steps from the data (epochs, not max_steps) and trainable parameters equal the trainer's own record."""
    from vlmlab.train.trainer import Trainer

    tiny_raw["train"]["stages"] = [
        {"name": "align", "epochs": 0.5, "lr": {"projector": 1e-3}},
        {"name": "finetune", "epochs": 0.25, "lr": {"projector": 1e-3, "llm": 1e-3}},
    ]
    cfg = config_from_dict(tiny_raw)
    plan = plan_variant("tiny", cfg, 1, Setting(hardware("cpu"), "ddp", 1))
    Trainer(cfg, tmp_path / "run").run_training()
    record = json.loads((tmp_path / "run" / "train.json").read_text())
    assert [s.steps for s in plan.stages] == [4, 2]  # ceil(0.5 x 64 / 8), ceil(0.25 x 64 / 8)
    assert sum(s.steps for s in plan.stages) == record["steps"]
    assert [s.trained for s in plan.stages] == [sum(t.values()) for t in record["trainable"].values()]
    assert plan.stages[0].data.how == "counted, tokenized"


def test_sharding_divides_what_each_strategy_shards():
    fp = Footprint("stage")
    fp.add("weights", 800, "w")
    fp.add("gradients + AdamW state", 1200, "g")
    fp.add("LLM activations", 50, "a")
    assert per_process(fp, "ddp", 1).total == 2050
    assert per_process(fp, "ddp", 4, trained=100).parts["DDP gradient buckets"] == 400
    assert per_process(fp, "zero2", 4).parts == {
        "weights": 800,
        "gradients + AdamW state (own shard)": 300,
        "LLM activations": 50,
    }
    z3 = per_process(fp, "zero3", 4, unit_bytes=30).parts
    assert z3 == {
        "weights (own shard)": 200,
        "gathered unit": 60,
        "gradients + AdamW state (own shard)": 300,
        "LLM activations": 50,
    }
    assert per_process(fp, "fsdp", 4, unit_bytes=30).parts == z3


# ----- the power formulas ---------------------------------------------------------------------------------------
def _simulate(rng, n_q, n_s, mu, sd_q, sd_e, sd_v=0.0):
    u = rng.normal(0, sd_q, size=(n_q, 1))
    v = rng.normal(0, sd_v, size=(1, n_s))
    return mu + u + v + rng.normal(0, sd_e, size=(n_q, n_s))


def test_the_mde_is_detected_with_the_stated_power_and_zero_at_alpha():
    """A paired test over questions (seed-averaged differences, questions resampled) rejects in ~80% of simulated
    studies whose true effect is the MDE, and in ~5% when there is none."""
    rng = np.random.default_rng(0)
    n_q, n_s, sd_q, sd_e = 300, 3, 0.3, 0.4
    sd = (sd_q**2 + sd_e**2) ** 0.5
    share = sd_e**2 / sd**2
    mde = minimum_detectable_effect(sd, n_q, n_s, seed_share=share)
    assert mde == pytest.approx(2.8016 * standard_error(sd, n_q, n_s, share), rel=1e-4)

    def rejects(mu):
        d = _simulate(rng, n_q, n_s, mu, sd_q, sd_e).mean(axis=1)
        return abs(d.mean()) / (d.std(ddof=1) / n_q**0.5) > 1.959964

    sims = 2000
    power = sum(rejects(mde) for _ in range(sims)) / sims
    false_positive = sum(rejects(0.0) for _ in range(sims)) / sims
    assert power == pytest.approx(0.80, abs=0.03)
    assert false_positive == pytest.approx(0.05, abs=0.015)


def test_questions_and_seeds_needed_invert_the_mde():
    sd, share, sd_seed, effect = 0.45, 0.6, 0.004, 0.02
    n = questions_needed(effect, sd, 2, seed_share=share, sd_seed=sd_seed)
    assert minimum_detectable_effect(sd, n, 2, seed_share=share, sd_seed=sd_seed) <= effect
    assert minimum_detectable_effect(sd, n - 1, 2, seed_share=share, sd_seed=sd_seed) > effect
    k = seeds_needed(effect, sd, 3000, seed_share=share, sd_seed=sd_seed)
    assert minimum_detectable_effect(sd, 3000, k, seed_share=share, sd_seed=sd_seed) <= effect
    assert minimum_detectable_effect(sd, 3000, k - 1, seed_share=share, sd_seed=sd_seed) > effect
    # a seed shift as large as the effect: no number of questions helps at one seed
    assert questions_needed(effect, sd, 1, sd_seed=0.02) is None
    # without seed noise (share 0), seeds cannot make up for too few questions
    assert seeds_needed(effect, sd, 100) is None


def test_pilot_noise_is_estimated_from_records():
    rng = np.random.default_rng(1)
    d = _simulate(rng, 4000, 4, 0.01, sd_q=0.3, sd_e=0.4, sd_v=0.02)
    noise = paired_noise(pd.DataFrame(d))
    assert noise.sd_paired == pytest.approx(0.5, rel=0.03)
    assert noise.seed_share == pytest.approx(0.64, abs=0.03)
    assert noise.sd_seed == pytest.approx(0.02, abs=0.015)
    one_seed = paired_noise(pd.DataFrame(d[:, :1]))
    assert (one_seed.seeds, one_seed.seed_share, one_seed.sd_seed) == (1, 0.0, 0.0)


def test_power_table_pairs_levels_on_the_same_questions_and_seeds():
    spec = study_spec_from_dict(
        {
            "name": "p",
            "base": "easy-vqa-tiny",
            "factors": {
                "llm": {
                    "keys": ["model.llm.id"],
                    "levels": {"a": {"model.llm.id": "llama1-tiny"}, "b": {"model.llm.id": "llama2-tiny"}},
                }
            },
            "seeds": [0, 1],
        }
    )
    rng = random.Random(0)
    rows = []
    for seed in (0, 1):
        for q in range(200):
            base = rng.random() < 0.5
            rows.append(
                {"mode": "clean", "task": "t", "item_id": str(q), "seed": seed, "llm": "a", "score": float(base)}
            )
            rows.append({"mode": "clean", "task": "t", "item_id": str(q), "seed": seed, "llm": "b", "score": 1.0})

    class Pilot:
        pass

    pilot = Pilot()
    pilot.spec, pilot.results = spec, pd.DataFrame(rows)
    ((factor, level, base, task, table),) = comparisons(pilot)
    assert (factor, level, base, task, table.shape) == ("llm", "b", "a", "t", (200, 2))
    expected = (1 - pilot.results[pilot.results["llm"] == "a"]["score"]).mean()
    (row,) = power_table(pilot, {"t": 800}, 2, 0.02)
    assert row.noise.mean == pytest.approx(expected)
    assert row.questions == 800 and row.seeds == 2
    assert row.mde == pytest.approx(
        minimum_detectable_effect(
            row.noise.sd_paired, 800, 2, seed_share=row.noise.seed_share, sd_seed=row.noise.sd_seed
        )
    )


# ----- the command ----------------------------------------------------------------------------------------------
def test_plan_command_writes_json_and_names_bad_input(tmp_path, capsys):
    out = tmp_path / "plan.json"
    recipe = str(ROOT / "examples/recipes/prismatic-single-stage.yaml")
    assert main(["study", recipe, "--plan", "--gpus-per-node", "8", "--strategy", "fsdp", "--plan-json", str(out)]) == 0
    plan = json.loads(out.read_text())
    assert plan["runs"] == 1 and plan["variants"][0]["stages"][0]["steps"] == 5198
    capsys.readouterr()
    assert main(["study", recipe, "--plan", "--gpu", "tpu-v9"]) == 2
    assert "launcher.gpu: unknown GPU 'tpu-v9'" in capsys.readouterr().err
    assert main(["study", recipe, "--launcher", "local"]) == 2
    assert "a run config, not a study" in capsys.readouterr().err
    raw = yaml.safe_load(Path(recipe).read_text())
    raw["model"]["llm"]["path"] = "/models/my-own-llm"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    assert main(["study", str(bad), "--plan"]) == 2
    err = capsys.readouterr().err
    assert "model.llm.path: /models/my-own-llm is not on this machine" in err and "Traceback" not in err


def test_the_trainers_preflight_reads_the_engine_it_runs_under():
    """Under FSDP / ZeRO the trainer checks the per-process share (LLaVA's finetune: 114 GiB unsharded, 28.5 per GPU
    over 8), so the pre-flight no longer refuses a run that fits once sharded."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from vlmlab.train.engines import strategy

    def acc(kind, stage=None):
        plugin = SimpleNamespace(deepspeed_config={"zero_optimization": {"stage": stage}} if stage is not None else {})
        return SimpleNamespace(distributed_type=kind, state=SimpleNamespace(deepspeed_plugin=plugin))

    assert strategy(acc(DistributedType.FSDP)) == "fsdp"
    assert strategy(acc(DistributedType.MULTI_GPU)) == "ddp"
    assert [strategy(acc(DistributedType.DEEPSPEED, s)) for s in (0, 1, 2, 3)] == ["ddp", "zero2", "zero2", "zero3"]


def test_flops_per_sample_match_a_counted_training_step(tiny_cfg):
    """The plan's FLOPs of a finetune sample equal what torch's FlopCounterMode counts in a real forward + backward
    of the same items, one at a time (no padding), with eager attention so every product is counted."""
    from torch.utils.flop_counter import FlopCounterMode

    from vlmlab.data.dataset import VQADataset
    from vlmlab.data.sources import load_training_items
    from vlmlab.plan.data import measure
    from vlmlab.plan.flops import tower_forward_flops, training_sample_flops
    from vlmlab.train.optim import apply_stage_freezing
    from vlmlab.train.trainer import tokenizer_texts

    items = load_training_items(tiny_cfg)
    texts = tokenizer_texts(items)
    model = build_model(tiny_cfg, texts=texts)
    for config in (model.llm.lm.config, model.vision.tower.config):
        config._attn_implementation = "eager"
    apply_stage_freezing(model, tiny_cfg.train.stages[1])
    data = VQADataset(items[:6], model.llm, tiny_cfg.data.image, model.num_image_tokens, with_answers=True)
    counted = 0
    for i in range(len(data)):
        batch = data.collate([data[i]])
        with FlopCounterMode(display=False) as counter:
            model(**batch.model_inputs(), labels=batch.labels).loss_sum.backward()
        counted += counter.get_total_flops()
        model.zero_grad(set_to_none=True)
    sm = shape_model(tiny_cfg, lambda: texts)
    sm.model.llm.lm.config._attn_implementation = "eager"
    planned = training_sample_flops(
        sm, tiny_cfg, 1, measure(items[:6], tiny_cfg, model.llm, model.num_image_tokens, True), tower_forward_flops(sm)
    )
    assert planned.total * len(data) == pytest.approx(counted, rel=0.01)  # measured: 3.935e7 planned, 3.940e7 counted
