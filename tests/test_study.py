"""Studies: spec validation, the control check, resumable runner, combined results and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from vlmlab.cli import main
from vlmlab.study.control import ControlViolation
from vlmlab.study.runner import prepare_study, run_study
from vlmlab.study.spec import load_study_spec

LLM_FACTOR = {
    "keys": ["model.llm.id"],
    "levels": {"gen1": {"model.llm.id": "llama1-tiny"}, "gen3": {"model.llm.id": "llama3-tiny"}},
}


def write_spec(tmp_path, base, **fields):
    spec = {
        "name": "t",
        "question": "Does the generation matter?",
        "base": base,
        "factors": {"llm": LLM_FACTOR},
        **fields,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def one_line_error(capsys, argv) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return code, err


# ----- spec validation -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "factors, needle",
    [
        (
            {
                "llm": {
                    "keys": ["model.llm.id"],
                    "levels": {"a": {"model.llm.id": "llama1-tiny", "train.batch_size": 4}},
                }
            },
            "factors.llm.levels.a: sets train.batch_size, which factor 'llm' does not declare",
        ),
        (
            {"llm": {"keys": ["model.llm.id", "seed"], "levels": {"a": {"model.llm.id": "llama1-tiny"}}}},
            "factors.llm.levels.a: does not set seed",
        ),
        ({"seed": {"keys": ["seed"], "levels": {"a": {"seed": 1}}}}, "factors.seed: 'seed' is a results column"),
        ({"llm": {"keys": ["model.llm.id"], "levels": {"a b": {"model.llm.id": "llama1-tiny"}}}}, "level names use"),
    ],
)
def test_spec_errors_name_the_key(tmp_path, tiny_raw, capsys, factors, needle):
    path = write_spec(tmp_path, tiny_raw, factors=factors)
    code, err = one_line_error(capsys, ["study", str(path), "--check"])
    assert code == 2 and needle in err, err


def test_spec_errors_unknown_key_level_and_analysis(tmp_path, tiny_raw, capsys):
    path = write_spec(tmp_path, tiny_raw, seeds=[0], colour="red")
    code, err = one_line_error(capsys, ["study", str(path), "--check"])
    assert code == 2 and "colour: unknown key" in err
    path = write_spec(tmp_path, tiny_raw, variants=[{"llm": "gen2"}])
    code, err = one_line_error(capsys, ["study", str(path), "--check"])
    assert code == 2 and "variants.0.llm: unknown level 'gen2'" in err
    path = write_spec(tmp_path, tiny_raw, analyses=[{"id": "calibration", "n_bins": 1}])
    code, err = one_line_error(capsys, ["study", str(path), "--check"])
    assert code == 2 and "analyses.0.n_bins" in err
    path = write_spec(tmp_path, tiny_raw, analyses=["calibrashun"])
    code, err = one_line_error(capsys, ["study", str(path), "--check"])
    assert code == 2 and "analyses.0.id: unknown analysis 'calibrashun'" in err
    bad_level = {"llm": {"keys": ["model.llm.id"], "levels": {"x": {"model.llm.id": "lama3"}}}}
    path = write_spec(tmp_path, tiny_raw, factors=bad_level)
    code, err = one_line_error(capsys, ["study", str(path), "--check"])
    assert code == 2 and "variant x (seed 0): model.llm.id: unknown backbone 'lama3'" in err


def test_cross_product_and_explicit_variants(tmp_path, tiny_raw):
    factors = {
        "llm": LLM_FACTOR,
        "proj": {
            "keys": ["model.projector.id"],
            "levels": {"mlp": {"model.projector.id": "gelu-mlp"}, "lin": {"model.projector.id": "linear"}},
        },
    }
    study = prepare_study(write_spec(tmp_path, tiny_raw, factors=factors, seeds=[0, 1]), tmp_path / "out")
    assert [v.run_name for v in study.variants][:3] == ["gen1-mlp/seed-0", "gen1-mlp/seed-1", "gen1-lin/seed-0"]
    assert len(study.variants) == 8
    study = prepare_study(
        write_spec(tmp_path, tiny_raw, factors=factors, variants=[{"llm": "gen3", "proj": "lin"}]), tmp_path / "o"
    )
    assert [v.name for v in study.variants] == ["gen3-lin"] and study.variants[0].cfg.model.projector.id == "linear"


# ----- control check ---------------------------------------------------------------------------------
def _register_wide_preset():
    """A preset that silently brings its own default width: exactly what the control check must catch."""
    from pydantic import Field

    from vlmlab.models.llm.tiny import Llama2Tiny, TinyParams
    from vlmlab.registry import LLM_BACKBONES, register_llm

    if "wide-tiny" in LLM_BACKBONES.ids():
        return

    class WideParams(TinyParams):
        hidden_size: int = Field(64, ge=8)

    @register_llm("wide-tiny")
    class WideTiny(Llama2Tiny):
        """Test preset with a different default hidden size."""

        Params = WideParams


def test_control_check_passes_and_records_fingerprints(tmp_path, tiny_raw):
    study = prepare_study(write_spec(tmp_path, tiny_raw, seeds=[0, 1]), tmp_path / "out")
    c = study.control
    assert c["passed"] and c["config"]["declared"] == ["model.llm.id"]
    assert c["config"]["varied"] == {"gen1": {"model.llm.id": "llama1-tiny"}, "gen3": {"model.llm.id": "llama3-tiny"}}
    order = c["data_order"]
    assert order["identical"]
    for by_variant in order["per_seed"].values():
        assert by_variant["gen1"] == by_variant["gen3"]
    assert order["per_seed"]["0"]["gen1"] != order["per_seed"]["1"]["gen1"]  # seeds do change the order
    assert c["environment"]["packages"]["torch"] and "cpu_count" in c["environment"]


def test_control_check_refuses_an_undeclared_difference(tmp_path, tiny_raw, capsys):
    _register_wide_preset()
    tiny_raw["model"]["llm"].pop("hidden_size")  # both presets now resolve their own default width
    factors = {
        "llm": {
            "keys": ["model.llm.id"],
            "levels": {"gen2": {"model.llm.id": "llama2-tiny"}, "wide": {"model.llm.id": "wide-tiny"}},
        }
    }
    path = write_spec(tmp_path, tiny_raw, factors=factors)
    with pytest.raises(ControlViolation, match=r"gen2 and wide differ in model\.llm\.hidden_size \(128 vs 64\)"):
        prepare_study(path, tmp_path / "out")
    code, err = one_line_error(capsys, ["study", str(path), "--out", str(tmp_path / "out")])
    assert code == 2 and "model.llm.hidden_size" in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_factor_on_the_batch_size_is_an_expected_order_difference(tmp_path, tiny_raw):
    factors = {
        "bs": {"keys": ["train.batch_size"], "levels": {"b4": {"train.batch_size": 4}, "b8": {"train.batch_size": 8}}}
    }
    study = prepare_study(write_spec(tmp_path, tiny_raw, factors=factors), tmp_path / "out")
    assert not study.control["data_order"]["identical"]
    assert study.control["data_order"]["expected_differences"] == ["seed 0: b4 vs b8"]


# ----- runner: resume, skip, results -------------------------------------------------------------------
class Killed(Exception):
    pass


def test_study_killed_midway_resumes_without_retraining_and_matches(tmp_path, tiny_raw, monkeypatch):
    from vlmlab.train.trainer import Trainer

    tiny_raw["train"]["checkpoint_every"] = 2
    path = write_spec(tmp_path, tiny_raw, eval={"blind": True, "perturb": ["noise:0.1"]})
    reference = run_study(path, tmp_path / "reference")

    trained, original = [], Trainer.run_training
    crash = {"armed": True}

    def counting(self):
        trained.append(self.cfg.model.llm.id)
        return original(self)

    def crashing_checkpoint(self, optimizer, stage, step):
        orig_checkpoint(self, optimizer, stage, step)
        if crash["armed"] and self.cfg.model.llm.id == "llama3-tiny" and stage == 1 and step == 2:
            crash["armed"] = False
            raise Killed  # killed mid-stage, after a checkpoint

    orig_checkpoint = Trainer.checkpoint
    monkeypatch.setattr(Trainer, "run_training", counting)
    monkeypatch.setattr(Trainer, "checkpoint", crashing_checkpoint)
    out = tmp_path / "study"
    with pytest.raises(Killed):
        run_study(path, out)
    gen1_done = out / "variants/gen1/seed-0/done.json"
    assert gen1_done.is_file() and not (out / "variants/gen3/seed-0/done.json").exists()
    assert not (out / "results.parquet").exists()
    mtime = gen1_done.stat().st_mtime_ns

    trained.clear()
    study = run_study(path, out)
    assert trained == ["llama3-tiny"]  # gen1 skipped, gen3 resumed
    assert gen1_done.stat().st_mtime_ns == mtime
    got, want = pd.read_parquet(study.dir.results), pd.read_parquet(reference.dir.results)
    pd.testing.assert_frame_equal(got, want)
    assert set(got["mode"]) == {"clean", "blind", "noise-0.1"}
    assert {"variant", "llm", "seed", "mode", "format_error"} <= set(got.columns)
    summary = pd.read_csv(study.dir.summary)
    row = summary[(summary.variant == "gen1") & (summary["mode"] == "clean") & (summary.category == "all")].iloc[0]
    clean = got[(got.variant == "gen1") & (got["mode"] == "clean")]
    assert row["accuracy"] == pytest.approx(clean["score"].mean()) and row["n"] == len(clean)
    assert row["ci_low"] <= row["accuracy"] <= row["ci_high"]

    trained.clear()
    run_study(path, out)  # everything complete: nothing retrained
    assert trained == []


def test_changed_eval_spec_re_evaluates_only(tmp_path, tiny_raw, monkeypatch):
    from vlmlab.train.trainer import Trainer

    out = tmp_path / "study"
    run_study(write_spec(tmp_path, tiny_raw, eval={"blind": False}), out)
    calls = []
    original = Trainer.run_training
    monkeypatch.setattr(Trainer, "run_training", lambda self: calls.append(1) or original(self))
    run_study(write_spec(tmp_path, tiny_raw, eval={"blind": True}), out)
    assert calls == []  # the trained weights were reused; only the evaluations ran again
    assert set(pd.read_parquet(out / "results.parquet")["mode"]) == {"clean", "blind"}


def test_shared_vision_pretraining_is_exact(tmp_path, tiny_raw):
    """The second LLM variant reuses the first one's pretrained tower and ends exactly where a run that
    pretrained its own tower ends."""
    from vlmlab.config import config_from_dict
    from vlmlab.evaluation.evaluate import evaluate_run
    from vlmlab.train.trainer import Trainer

    tiny_raw["train"]["stages"].insert(0, {"name": "vision-pretrain", "max_steps": 3, "lr": {"vision": 1e-3}})
    study = run_study(write_spec(tmp_path, tiny_raw, eval={"blind": False}), tmp_path / "study")
    gen3 = study.dir.path / "variants/gen3/seed-0"
    assert json.loads((gen3 / "train.json").read_text())["vision_pretrain"]["cached"] is True
    alone = tmp_path / "alone"
    cfg = config_from_dict(tiny_raw, {"model.llm.id": "llama3-tiny", "name": "t-gen3-s0"})
    Trainer(cfg, alone).run_training()
    evaluate_run(alone)
    pd.testing.assert_frame_equal(
        pd.read_parquet(alone / "predictions.parquet"), pd.read_parquet(gen3 / "predictions.parquet")
    )


def test_only_and_job_script(tmp_path, tiny_raw, capsys):
    path = write_spec(tmp_path, tiny_raw, eval={"blind": False})
    out = tmp_path / "study"
    assert main(["study", str(path), "--out", str(out), "--script", str(tmp_path / "jobs.sh")]) == 0
    script = (tmp_path / "jobs.sh").read_text()
    assert "--only gen1" in script and "--only gen3" in script and f"vlmlab report {out}" in script
    assert main(["study", str(path), "--out", str(out), "--only", "gen3"]) == 0
    assert (out / "variants/gen3/seed-0/done.json").is_file() and not (out / "variants/gen1").exists()
    assert not (out / "results.parquet").exists()
    capsys.readouterr()
    code, err = one_line_error(capsys, ["study", str(path), "--out", str(out), "--only", "gen9"])
    assert code == 2 and "--only gen9: no such variant" in err


# ----- report ---------------------------------------------------------------------------------------------
def test_report_has_every_section_with_embedded_images(tmp_path, tiny_raw, capsys):
    out = tmp_path / "study"
    spec = write_spec(
        tmp_path,
        tiny_raw,
        seeds=[0, 1],
        analyses=[
            "factor-effects",
            "visual-reliance",
            {"id": "calibration", "n_bins": 10},
            {"id": "attention-profile", "n_probe": 8},
            "claims",
        ],
    )
    run_study(spec, out)
    assert main(["report", str(out)]) == 0  # before any analysis is computed: placeholders, never a computation
    html = (out / "report.html").read_text()
    assert "<code>calibration</code>: not computed yet" in html and "<h2>Calibration</h2>" in html
    assert main(["study", str(spec), "--out", str(out)]) == 0  # complete already: combines, then computes analyses
    assert (out / "analysis" / "calibration.json").is_file()
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    for title in (
        "Design",
        "Control check",
        "Results",
        "Per category",
        "Training",
        "Visual reliance (clean vs blind)",
        "Calibration",
        "Factor effects per task (paired deltas)",
        "Attention to the image by depth",
    ):
        assert f"<h2>{title}</h2>" in html, title
    claims = html.index("<h2>What the seeds claim, and what this study shows</h2>")
    assert claims < html.index("<h2>Design</h2>") and "<h2>" not in html[: claims - 1]  # the claims open the report
    assert "Does the generation matter?" in html and "passed" in html
    assert "All 4 runs were trained in this environment" in html  # each run's environment.json vs the study's
    assert html.count("src='data:image/png;base64,") >= 5
    assert "http://" not in html and "https://" not in html and "<script" not in html  # opens offline
    md = (out / "report.md").read_text()
    assert "gen3 − gen1" in html
    for name in (
        "accuracy_by_task",
        "accuracy_by_category",
        "training_curves",
        "visual_reliance",
        "calibration",
        "factor_effects_llm",
    ):
        assert f"figures/{name}.png" in md and (out / "figures" / f"{name}.png").stat().st_size > 1000
    # one run resumed on another machine: the report names it and the field that differs
    env_file = next((out / "variants").glob("*/seed-1/environment.json"))
    env = json.loads(env_file.read_text())
    env["resumed_on"].append(dict(env["trained_on"], gpu="NVIDIA H100"))
    env_file.write_text(json.dumps(env))
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "in another environment" in html and "resumed 1" in html and "NVIDIA H100" in html


def test_report_on_an_unfinished_study_is_one_line(tmp_path, capsys):
    code, err = one_line_error(capsys, ["report", str(tmp_path)])
    assert code == 1 and "study.yaml: not found" in err


def test_builtin_demo_studies_are_valid_and_controlled(tmp_path, monkeypatch, capsys):
    """`vlmlab study SPEC --check` resolves every variant and runs the control check without building a model."""
    from vlmlab.cli import resolve_study_path
    from vlmlab.models.vlm import VisionLanguageModel

    for name, seeds in (("demo", [0, 1]), ("demo-quick", [0])):  # two seeds; the quick demo stays small
        spec, _ = load_study_spec(resolve_study_path(name))
        assert list(spec.factors["llm"].levels) == ["gen1", "gen2", "gen3"] and spec.seeds == seeds
    with monkeypatch.context() as patched:
        patched.setattr(VisionLanguageModel, "__init__", lambda *a, **k: pytest.fail("--check built a model"))
        assert main(["study", "demo-quick", "--out", str(tmp_path / "out"), "--check"]) == 0
    assert "control check passed: 3 variants x 1 seeds" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    study = prepare_study(resolve_study_path("demo-quick"), tmp_path / "out")  # generates its shapes-world set
    assert study.control["passed"] and study.control["data_order"]["identical"]
    assert [v.name for v in study.variants] == ["gen1", "gen2", "gen3"]


def test_analyze_writes_json_that_agrees_with_a_recomputation(tmp_path, tiny_raw, capsys):
    import json

    import pandas as pd

    from vlmlab.analysis.overlap import correctness, pair_stats

    out = tmp_path / "study"
    run_study(write_spec(tmp_path, tiny_raw), out)
    assert main(["analyze", str(out), "--only", "overlap,exclusive-capabilities,factor-effects"]) == 0
    record = json.loads((out / "analysis" / "overlap.json").read_text())
    assert record["id"] == "overlap" and record["params"] == {"alpha": 0.05, "churn": 0.1, "margin": 0.02}
    frame = record["result"]["pairs"]["frame"]
    pairs = [dict(zip(frame["columns"], row)) for row in frame["rows"]]
    wide = correctness(pd.read_parquet(out / "results.parquet"))
    questions = list(zip(wide.index.get_level_values("task"), wide.index.get_level_values("item_id")))
    expected = pair_stats(wide["gen1"].to_numpy(), wide["gen3"].to_numpy(), questions=questions)
    assert len(pairs) == 1 and pairs[0]["a"] == "gen1" and pairs[0]["b"] == "gen3"
    for key in ("n", "both", "only_a", "only_b", "neither", "oracle", "churn", "net_low", "net_high", "verdict"):
        assert pairs[0][key] == (pytest.approx(expected[key]) if isinstance(expected[key], float) else expected[key]), (
            key
        )
    assert (out / "analysis" / "exclusive-capabilities.json").is_file()
    html = (out / "report.html").read_text()
    assert "<h2>Question-level overlap</h2>" in html and "<h2>Exclusive capabilities</h2>" in html
    assert main(["analyze", str(out), "--only", "nope"]) == 2


def test_report_twice_is_byte_identical_and_runs_no_model(tmp_path, tiny_raw, monkeypatch):
    """The report only renders saved results: rendering again gives the same bytes, and no model is built (the
    attention profile and routing costs it shows were measured once, by `vlmlab analyze`)."""
    from vlmlab.models.vlm import VisionLanguageModel

    out = tmp_path / "study"
    analyses = [
        "overlap",
        "calibration",
        {"id": "attention-profile", "n_probe": 8},
        {"id": "routing-cost", "n_probe": 4},
    ]
    assert main(["study", str(write_spec(tmp_path, tiny_raw, analyses=analyses)), "--out", str(out)]) == 0
    monkeypatch.setattr(VisionLanguageModel, "__init__", lambda *a, **k: pytest.fail("a model was built"))
    assert main(["report", str(out)]) == 0
    first = {p.name: p.read_bytes() for p in (out / "report.md", out / "report.html")}
    figures = {p.name: p.read_bytes() for p in (out / "figures").glob("*.png")}
    assert main(["report", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in (out / "report.md", out / "report.html")} == first
    assert {p.name: p.read_bytes() for p in (out / "figures").glob("*.png")} == figures
    assert (
        "Accuracy against compute" in first["report.md"].decode() and "not computed" not in first["report.md"].decode()
    )
    # analyzing again finds every measurement stored (no model either) and gives the same results
    saved = {p.name: p.read_bytes() for p in (out / "analysis").glob("*.json")}
    assert main(["analyze", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in (out / "analysis").glob("*.json")} == saved


def test_representations_analysis_on_a_tiny_study_caches_its_features(tmp_path, tiny_raw):
    import json

    out = tmp_path / "study"
    run_study(
        write_spec(
            tmp_path,
            tiny_raw,
            seeds=[0, 1],
            analyses=[{"id": "representations", "n_probe": 16, "perturb": "noise:0.3"}],
        ),
        out,
    )
    assert main(["analyze", str(out)]) == 0
    record = json.loads((out / "analysis" / "representations.json").read_text())
    frame = record["result"]["tables"]["stability"]["frame"]
    stability = [dict(zip(frame["columns"], row)) for row in frame["rows"]]
    assert [r["variant"] for r in stability] == ["gen1", "gen3"] and all(0 < r["stability"] <= 1 for r in stability)
    cache = sorted((out / "variants" / "gen1" / "seed-0" / "measurements").glob("representations-*.safetensors"))
    assert len(cache) == 3  # clean, perturbed images, question variant
    assert all(0 < r["question_stability"] <= 1 for r in stability)
    stamp = [c.stat().st_mtime_ns for c in cache]
    assert main(["analyze", str(out), "--only", "representations"]) == 0
    assert [c.stat().st_mtime_ns for c in cache] == stamp  # reused, not recomputed
    assert "figures/cka_seeds.png" in (out / "report.md").read_text()


def test_a_crash_between_writes_is_never_trusted(tmp_path, tiny_raw, monkeypatch, capsys):
    """Crash after a variant's predictions but before its metrics, then between results.parquet and summary.csv:
    nothing half-written is read, and finishing the study gives the uninterrupted results."""
    from vlmlab import io

    path = write_spec(tmp_path, tiny_raw, eval={"blind": False})
    reference = run_study(path, tmp_path / "reference")
    out = tmp_path / "study"
    real_write_json = io.write_json

    def crash_on(name):
        def write_json(target, obj):
            if Path(target).name == name and "gen3" in str(target):
                raise Killed
            return real_write_json(target, obj)

        return write_json

    monkeypatch.setattr(io, "write_json", crash_on("metrics.json"))
    with pytest.raises(Killed):
        run_study(path, out)
    gen3 = out / "variants/gen3/seed-0"
    assert (gen3 / "predictions.parquet").is_file() and not (gen3 / "done.json").exists()
    monkeypatch.undo()

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(pd.DataFrame, "to_csv", killed)  # dies after results.parquet, before summary.csv
    (out / "summary.csv").write_text("variant,accuracy\nstale,1.0\n")  # left by an earlier, smaller study
    with pytest.raises(Killed):
        run_study(path, out)
    assert (
        (gen3 / "done.json").is_file() and (out / "results.parquet").is_file() and not (out / "complete.json").exists()
    )
    capsys.readouterr()
    code, err = one_line_error(capsys, ["report", str(out)])
    assert code == 1 and "complete.json: not found; the results were not completely written" in err
    monkeypatch.undo()

    run_study(path, out)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), pd.read_parquet(reference.dir.results))
    assert (out / "summary.csv").read_text() == reference.dir.summary.read_text()
    (out / "summary.csv").write_text((out / "summary.csv").read_text().replace("gen1", "genX"))  # edited afterwards
    capsys.readouterr()
    code, err = one_line_error(capsys, ["report", str(out)])
    assert code == 1 and "summary.csv: not the file complete.json vouches for" in err


def test_atomic_write_keeps_the_old_file_when_the_writer_dies(tmp_path):
    from vlmlab import io

    target = tmp_path / "metrics.json"
    io.write_json(target, {"accuracy": 0.5})
    with pytest.raises(Killed):
        with io.atomic_path(target) as tmp:
            tmp.write_text('{"accura')  # half written
            raise Killed
    assert json.loads(target.read_text()) == {"accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


def test_a_variant_resumed_with_a_changed_recipe_is_flagged_in_the_report(tmp_path, tiny_raw, monkeypatch, capsys):
    """gen3 stops on a NaN mid-finetune; the spec's learning rate is lowered (the advice) and the study run
    again: gen3 resumes with the changed recipe, and the control check in the report flags it."""
    import torch

    from vlmlab.training_step import NumericalFault

    tiny_raw["train"]["checkpoint_every"] = 2
    spec = write_spec(tmp_path, tiny_raw)
    real_forward, calls = torch.nn.Module.__call__, {"n": 0}

    def poisoned(self, *args, **kwargs):  # NaN out of gen3's projector on its 5th training forward
        out = real_forward(self, *args, **kwargs)
        if getattr(self, "_poison", False) and self.training:
            calls["n"] += 1
            if calls["n"] == 5:
                return out * float("nan")
        return out

    from vlmlab.train import trainer as trainer_mod

    real_build = trainer_mod.build_model

    def build(cfg, *args, **kwargs):
        model = real_build(cfg, *args, **kwargs)
        model.projector._poison = cfg.model.llm.id == "llama3-tiny"
        return model

    monkeypatch.setattr(torch.nn.Module, "__call__", poisoned)
    monkeypatch.setattr(trainer_mod, "build_model", build)
    out = tmp_path / "study"
    with pytest.raises(NumericalFault):
        run_study(spec, out)
    monkeypatch.setattr(torch.nn.Module, "__call__", real_forward)
    tiny_raw["train"]["stages"][1]["lr"]["llm"] = 1e-4
    run_study(write_spec(tmp_path, tiny_raw), out)
    assert "provenance" not in json.loads((out / "control.json").read_text())  # the prepare step's record, as written
    control = json.loads((out / "provenance.json").read_text())  # the combine step's own record
    changes = control["runs"]["gen3/seed-0"]["recipe_changes"]
    assert changes == [
        {"resumed_from": "checkpoints/step-0100000002", "changes": {"train.stages.1.lr.llm": [1e-3, 1e-4]}}
    ]
    assert control["runs"]["gen1/seed-0"]["recipe_changes"] == []  # gen1 was retrained on the new recipe
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "Flagged: resumed with a changed recipe" in html and "gen3/seed-0" in html
    assert "train.stages.1.lr.llm: 0.001 → 0.0001" in html
    # a study finished by an earlier release kept the provenance in control.json and vouched for two files
    legacy = json.loads((out / "control.json").read_text()) | {"provenance": control}
    (out / "control.json").write_text(json.dumps(legacy))
    (out / "provenance.json").unlink()
    complete = json.loads((out / "complete.json").read_text())
    complete["files"].pop("provenance.json")
    (out / "complete.json").write_text(json.dumps(complete))
    assert main(["report", str(out)]) == 0
    assert "Flagged: resumed with a changed recipe" in (out / "report.html").read_text()


def test_skip_lists_that_differ_between_variants_fail_the_data_control():
    from vlmlab.render.document import Report, Section
    from vlmlab.report.study_report import _provenance

    def rendered(prov):
        report = Report("t")
        _provenance(report.add(Section("Control check")), prov)
        return report.to_html()

    same = {"runs": {"a/seed-0": {"bad_images": {"t/1": "x.png"}}, "b/seed-0": {"bad_images": {"t/1": "x.png"}}}}
    assert "skipped the same items" in rendered({**same, "skips_match": True})
    differ = {"runs": {"a/seed-0": {"bad_images": {"t/1": "x.png"}}, "b/seed-0": {}}, "skips_match": False}
    assert "did not train on the same data" in rendered(differ)
