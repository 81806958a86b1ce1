"""`vlmlab study`: control check, then train and evaluate every variant (resumable), then combine the records."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vlmlab import io
from vlmlab.distributed import barrier, is_main_process
from vlmlab.environment import environment
from vlmlab.errors import UserError
from vlmlab.models.routing.auto_layer import resolve_auto_layer
from vlmlab.progress import console
from vlmlab.runs import RunDir, init_run
from vlmlab.study.control import check_config_control, check_order_control
from vlmlab.study.spec import StudySpec, Variant, build_analysis, expand_variants, load_study_spec


class StudyDir:
    """`runs/<study>/{study.yaml, control.json, variants/<variant>/seed-<s>/, results.parquet, summary.csv, report.*}`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    spec = property(lambda self: self.path / "study.yaml")
    control = property(lambda self: self.path / "control.json")
    results = property(lambda self: self.path / "results.parquet")
    summary = property(lambda self: self.path / "summary.csv")
    report_html = property(lambda self: self.path / "report.html")
    report_md = property(lambda self: self.path / "report.md")
    vision_cache = property(lambda self: self.path / "cache" / "vision-pretrain")
    complete = property(lambda self: self.path / "complete.json")  # written last: names the results it vouches for

    def variant(self, v: Variant) -> Path:
        return self.path / "variants" / v.name / f"seed-{v.seed}"


DONE = "done.json"  # a variant is complete only when this marker holds the hash of its current inputs
TRAIN_INFO = "train.json"


@dataclass
class Study:
    spec: StudySpec
    variants: list[Variant]
    control: dict[str, Any]
    dir: StudyDir


def prepare_study(spec_path: str | Path, out: str | Path | None = None) -> Study:
    """Validate the spec, build its datasets, resolve every variant and run the control check (no training)."""
    from vlmlab.cache import shapes_world_dataset

    spec, spec_dir = load_study_spec(spec_path)
    for i, analysis in enumerate(spec.analyses):
        build_analysis(analysis, f"{spec_path}: analyses.{i}")
    paths = {name: str(shapes_world_dataset(d.seed, d.n, d.size)) for name, d in spec.datasets.items()}
    variants = expand_variants(spec, spec_dir, paths)
    for v in variants:  # a variant that starts from another run needs it finished, before anything is written
        init_run(v.cfg)
        if (resolved := resolve_auto_layer(v.cfg)) is not v.cfg:  # DPVR `layer: auto` -> the measured k
            v.cfg, v.resolved = resolved, resolved.resolved()
    config_check = check_config_control(spec, variants)
    order_check = check_order_control(spec, variants)
    control = {
        "passed": True,
        "config": config_check,
        "data_order": order_check,
        "seeds": spec.seeds,
        "variants": [v.name for v in variants if v.seed == spec.seeds[0]],
        "environment": environment(),
    }
    return Study(spec, variants, control, StudyDir(out or Path("runs") / spec.name))


def variant_inputs(v: Variant, spec: StudySpec) -> str:
    """Hash of everything a variant's outputs depend on: its resolved config and the evaluation spec."""
    return io.content_hash({"config": v.resolved, "eval": spec.eval.model_dump(mode="json")})


def is_complete(study: Study, v: Variant) -> bool:
    marker = study.dir.variant(v) / DONE
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text())["inputs"] == variant_inputs(v, study.spec)
    except (json.JSONDecodeError, KeyError):
        return False


def run_study(spec_path: str | Path, out: str | Path | None = None, only: list[str] | None = None) -> Study:
    """Train and evaluate every variant not yet complete; combine results once all are. `only` limits the
    variants run by this call (names like `gen3`), for spreading a study over jobs."""
    study = prepare_study(spec_path, out)
    known = {v.name for v in study.variants}
    for name in only or []:
        if name not in known:
            raise UserError(f"--only {name}: no such variant (variants: {', '.join(sorted(known))})", exit_code=2)
    study.dir.path.mkdir(parents=True, exist_ok=True)
    todo = [v for v in study.variants if not only or v.name in only]
    if is_main_process():  # under torchrun / accelerate launch every process trains; one writes
        io.write_yaml(study.dir.spec, study.spec.model_dump(mode="json"))
        io.write_json(study.dir.control, study.control)
        if any(not is_complete(study, v) for v in todo):  # results about to change: they stop being vouched for
            study.dir.complete.unlink(missing_ok=True)
    barrier()
    for i, v in enumerate(todo, start=1):
        if is_complete(study, v):
            console.print(f"[{i}/{len(todo)}] {v.run_name}: complete, skipped")
            continue
        console.print(f"[bold][{i}/{len(todo)}] {v.run_name}[/bold]: {_describe(v)}")
        run_variant(study, v)
    barrier()
    missing = [v.run_name for v in study.variants if not is_complete(study, v)]
    if missing:
        console.print(f"variants still to run: {', '.join(missing)} (results are combined once all are complete)")
        return study
    from vlmlab.study.results import write_results

    if is_main_process():
        write_results(study)
    barrier()
    return study


def _describe(v: Variant) -> str:
    return ", ".join(f"{k}={json.dumps(val)}" for k, val in v.overrides.items())


def run_variant(study: Study, v: Variant) -> dict[str, Any]:
    """Train (resuming from the last checkpoint if a previous attempt stopped), evaluate every mode, mark done."""
    import torch

    from vlmlab.data.perturb import parse_perturbation
    from vlmlab.evaluation.evaluate import evaluate_run
    from vlmlab.runs import load_run_model
    from vlmlab.train.checkpoint import WEIGHTS
    from vlmlab.train.trainer import Trainer

    vdir = study.dir.variant(v)
    run = RunDir(vdir)
    if is_main_process():
        (vdir / DONE).unlink(missing_ok=True)
        if run.config.is_file() and yaml.safe_load(run.config.read_text()) != v.resolved:
            console.print(f"{v.run_name}: inputs changed since the last attempt; starting it afresh")
            shutil.rmtree(vdir)
    barrier()
    t0 = time.perf_counter()
    if (run.final / WEIGHTS).is_file() and (vdir / TRAIN_INFO).is_file():
        model, cfg = load_run_model(vdir, device="cuda" if torch.cuda.is_available() else "cpu")
    else:
        result = Trainer(v.cfg, vdir, resume=run.config.is_file(), vision_cache=study.dir.vision_cache).run_training()
        model, cfg = result.model, v.cfg
        _write_main(
            vdir / TRAIN_INFO,
            {
                "steps": result.steps,
                "seconds": result.seconds,
                "samples_per_s": result.samples_per_s,
                "trainable": result.trainable,
                "vision_pretrain": result.vision_pretrain,
                "parameters": {
                    g: sum(p.numel() for p in getattr(model, g).parameters()) for g in ("vision", "projector", "llm")
                },
                "llm_pretraining": model.llm.pretraining,
            },
        )
    model.eval()
    t_eval = time.perf_counter()
    evaluate_run(vdir, model=model, cfg=cfg)
    if study.spec.eval.blind:
        evaluate_run(vdir, model=model, cfg=cfg, blind=True)
    for p in study.spec.eval.perturb:
        evaluate_run(vdir, model=model, cfg=cfg, perturb=parse_perturbation(p))
    done = {
        "inputs": variant_inputs(v, study.spec),
        "variant": v.name,
        "seed": v.seed,
        "levels": v.levels,
        "eval_seconds": time.perf_counter() - t_eval,
        "seconds": time.perf_counter() - t0,
    }
    _write_main(vdir / DONE, done)
    return done


def _write_main(path: Path, record: dict[str, Any]) -> None:
    if is_main_process():
        io.write_json(path, record)


def job_script(spec_path: str | Path, study: Study) -> str:
    """A shell script with one command per variant (submit each line as a cluster job), then the combine step."""
    spec_arg, out = str(spec_path), str(study.dir.path)
    lines = [
        "#!/usr/bin/env bash",
        f"# {study.spec.name}: one job per variant; run them anywhere that sees {out}/.",
        "set -euo pipefail",
    ]
    for name in dict.fromkeys(v.name for v in study.variants):
        lines.append(f"vlmlab study {spec_arg} --out {out} --only {name}")
    lines.append("# when every job has finished: combine the records and write the report")
    lines.append(f"vlmlab study {spec_arg} --out {out} && vlmlab report {out}")
    return "\n".join(lines) + "\n"
