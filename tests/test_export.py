"""`vlmlab export --format hf-llava`: transformers loads the checkpoint and its logits equal vlmlab's."""

from __future__ import annotations

import pytest
import torch
import yaml

from vlmlab.cli import main
from vlmlab.config import config_from_dict
from vlmlab.data.dataset import VQADataset
from vlmlab.data.sources import load_source
from vlmlab.models.vlm import position_ids_from_mask
from vlmlab.runs import load_run_model
from vlmlab.train.trainer import Trainer


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    import copy

    from conftest import TINY

    raw = copy.deepcopy(TINY)
    raw["model"]["vision"].update(family="clip", feature_layer=-2)
    raw["model"]["llm"]["id"] = "llama3-tiny"
    raw["train"]["stages"][1]["lr"]["vision"] = 1e-3  # every part moves away from its initialization
    out = tmp_path_factory.mktemp("run") / "run"
    Trainer(config_from_dict(raw), out).run_training()
    return out


def test_exported_llava_gives_the_same_logits(clip_run, tmp_path, capsys):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    assert main(["export", str(clip_run), str(tmp_path / "llava"), "--format", "hf-llava"]) == 0
    llava = LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava").eval()
    model, cfg = load_run_model(clip_run)
    _, items = load_source(cfg.data.eval[0], "data.eval.0", cfg.data.image)
    data = VQADataset(items[:6], model.llm, cfg.data.image, model.num_image_tokens, with_answers=False)
    batch = data.collate([data[i] for i in range(6)])  # left-padded rows of different lengths
    with torch.no_grad():
        ours = model.logits(**batch.model_inputs())
        theirs = llava(
            input_ids=batch.input_ids,
            pixel_values=batch.pixel_values,
            attention_mask=batch.attention_mask,
            position_ids=position_ids_from_mask(batch.attention_mask),
        ).logits
    real = batch.attention_mask.bool()
    torch.testing.assert_close(theirs[real], ours[real], atol=1e-5, rtol=1e-5)
    # generate() stops where vlmlab does (llama3's <|eot_id|>, not the LM's eos) and answers the same
    from vlmlab.evaluation.generate import greedy_generate

    assert llava.generation_config.eos_token_id == model.llm.stop_token_id
    with torch.no_grad():
        gen = greedy_generate(model, batch, cfg.eval.max_new_tokens)
        out = llava.generate(
            input_ids=batch.input_ids,
            pixel_values=batch.pixel_values,
            attention_mask=batch.attention_mask,
            max_new_tokens=cfg.eval.max_new_tokens,
            do_sample=False,
        )[:, batch.input_ids.shape[1] :]
    assert [model.llm.decode(t.tolist()) for t in out] == [model.llm.decode(t) for t in gen.token_ids]
    processor = AutoProcessor.from_pretrained(tmp_path / "llava")
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": "<image>\\nwhat color is the shape?"}], add_generation_prompt=True, tokenize=False
    )
    assert "<image>" in prompt  # the run's own chat template travels with the checkpoint
    assert processor.image_processor.size == {"height": 32, "width": 32}


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"model": {"routing": {"id": "fastv", "layer": 1, "ratio": 0.5}}}, "model.routing.id is 'fastv'"),
        (
            {"model": {"vision": {"id": "vim", "patch_size": 16, "hidden_size": 32, "num_layers": 1}}},
            "model.vision is 'vim'",
        ),
        ({"model": {"projector": {"id": "linear"}}}, "model.projector is 'linear'"),
    ],
)
def test_parts_llava_cannot_express_are_refused_with_the_reason(tiny_raw, change, reason):
    from vlmlab.errors import UserError
    from vlmlab.interop.llava_export import to_llava
    from vlmlab.models.build import build_model

    tiny_raw["model"]["vision"]["family"] = "clip"
    for section, parts in change.items():
        tiny_raw[section].update(parts)
    cfg = config_from_dict(tiny_raw)
    with pytest.raises(UserError, match=f"cannot export as hf-llava: {reason}"):
        to_llava(build_model(cfg, texts=["a", "b"]), cfg)


def test_import_llava_round_trip_evaluates_like_the_original_run(clip_run, tmp_path):
    """export → import-llava → eval: the imported run answers exactly like the run it came from, and the
    run-dir tools (attention profile) work on it; weights are stored once (parts/ + projector)."""
    import pandas as pd

    from vlmlab import io
    from vlmlab.evaluation.evaluate import evaluate_run
    from vlmlab.runs import RunDir

    assert main(["export", str(clip_run), str(tmp_path / "llava")]) == 0
    assert (
        main(
            [
                "import-llava",
                str(tmp_path / "llava"),
                str(tmp_path / "imported"),
                "--template",
                "llama3",
                "--eval",
                "easy-vqa:test",
            ]
        )
        == 0
    )
    imported = RunDir(tmp_path / "imported")
    assert sorted(io.read_json(imported.final / "trainer_state.json")["parts_from_pretrained"]) == ["llm", "vision"]
    assert (imported.path / "parts" / "llm" / "config.json").is_file()
    original = RunDir(clip_run)
    evaluate_run(original.path)
    cfg = yaml.safe_load(imported.config.read_text())
    cfg["data"]["eval"][0]["limit"] = 24  # the original run's eval slice and decoding length
    cfg["eval"] = {"batch_size": 16, "max_new_tokens": 4}
    imported.config.write_text(yaml.safe_dump(cfg))  # evaluation settings may change after import
    evaluate_run(imported.path)
    a, b = pd.read_parquet(original.predictions()), pd.read_parquet(imported.predictions())
    assert list(a["prediction"]) == list(b["prediction"])
    assert a["confidence"].to_numpy() == pytest.approx(b["confidence"].to_numpy(), abs=1e-5)
    assert main(["attention", str(imported.path), "--n-probe", "4"]) == 0


def test_import_llava_in_bfloat16_evaluates(clip_run, tmp_path):
    """A bf16 import (the usual way to load a 7B LLaVA) runs end to end: its tower comes back in bf16 while the
    projector is built in fp32, and the model casts between them (found on a GPU: the first bench failed)."""
    import pandas as pd

    from vlmlab.evaluation.evaluate import evaluate_run
    from vlmlab.runs import RunDir, load_run_model

    assert main(["export", str(clip_run), str(tmp_path / "llava")]) == 0
    assert (
        main(
            [
                "import-llava",
                str(tmp_path / "llava"),
                str(tmp_path / "imported"),
                "--dtype",
                "bfloat16",
                "--template",
                "llama3",
                "--eval",
                "easy-vqa:test",
            ]
        )
        == 0
    )
    model, _ = load_run_model(tmp_path / "imported")
    assert next(model.vision.parameters()).dtype == torch.bfloat16
    assert next(model.llm.parameters()).dtype == torch.bfloat16
    imported = RunDir(tmp_path / "imported")
    cfg = yaml.safe_load(imported.config.read_text())
    cfg["data"]["eval"][0]["limit"] = 16
    cfg["eval"] = {"batch_size": 8, "max_new_tokens": 4}
    imported.config.write_text(yaml.safe_dump(cfg))
    evaluate_run(imported.path)
    assert len(pd.read_parquet(imported.predictions())) == 16


def test_import_refuses_what_is_not_llava(tmp_path, capsys):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text('{"model_type": "llama"}')
    assert main(["import-llava", str(tmp_path / "ckpt"), str(tmp_path / "out")]) == 1
    assert "model_type is 'llama', not 'llava'" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_routing_cost_benchmark_at_a_scaled_shape_runs_end_to_end(tmp_path, monkeypatch):
    """benchmarks/bench_routing_scale.py (run on a GPU at the 7B shape) at a tiny shape: export -> widen the LM ->
    import-llava in bf16 -> bench routing -> attention, so the GPU measurement does not rot between GPU sessions."""
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "bench_routing_scale.py"
    spec = importlib.util.spec_from_file_location("bench_routing_scale", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(
        "sys.argv",
        [
            "bench_routing_scale.py",
            "--out",
            str(tmp_path / "scale"),
            "--layers",
            "3",
            "--hidden",
            "64",
            "--ffn",
            "128",
            "--heads",
            "2",
            "--dpvr-layer",
            "1",
            "--fastv-layer",
            "1",
            "--n-probe",
            "2",
            "--attention",
        ],
    )
    bench.main()
    record = json.loads((tmp_path / "scale" / "imported" / "routing_bench.json").read_text())
    assert record["geometry"]["layers"] == 3 and record["geometry"]["vision"] == 576
    ratios = {s["strategy"].split()[0]: s["counted_prefill_ratio"] for s in record["strategies"]}
    assert ratios["full"] == 1.0 and ratios["fastv"] < 1.0 and ratios["dpvr"] < 1.0
    assert list((tmp_path / "scale" / "imported" / "measurements").glob("attention-profile-*.json"))
