"""`vlmlab study`: control check, then train and evaluate every variant (resumable), then combine the records.

The steps, in order, each visible in the progress display: build the spec's datasets; measure what a
variant's config is read off (DPVR `layer: auto`: the attention profile of `model.init_from`); the control
check; train and evaluate each variant not yet complete; score each external variant's answers files;
combine. Preparing a study (`--check`) is pure:
it reads existing files and never loads a model.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from vlmlab import grants, io
from vlmlab.config import read_yaml
from vlmlab.data import shapes_world
from vlmlab.distributed import barrier, is_main_process
from vlmlab.environment import environment
from vlmlab.errors import EXIT_BUSY, UserError
from vlmlab.evaluation.evaluate import evaluate_run
from vlmlab.locks import LOCK, exclusive
from vlmlab.measure.base import measure_all
from vlmlab.measure.resolve import MeasurementNeeded, resolve_config
from vlmlab.progress import console, progress
from vlmlab.runs import init_run, load_run_model, normalized_config, resume_differences
from vlmlab.study.control import check_config_control, check_order_control
from vlmlab.study.external import control_record, is_scored, resolve_externals, score_external, study_tasks
from vlmlab.study.layout import Study, StudyDir
from vlmlab.study.parallel import run_in_workers
from vlmlab.study.results import modes, write_results
from vlmlab.study.spec import (
    Variant,
    build_analysis,
    expand_variants,
    level_combinations,
    load_study_spec,
    variant_inputs,
)
from vlmlab.train.trainer import Trainer


def prepare_study(spec_path: str | Path, out: str | Path | None = None) -> Study:
    """Validate the spec, build its datasets, resolve every variant and run the control check (no training, no
    model loaded). A variant whose config needs a measurement that does not exist yet keeps the unresolved
    value (`auto`) and is listed in `pending`."""
    spec, spec_dir = load_study_spec(spec_path)
    for i, analysis in enumerate(spec.analyses):
        build_analysis(analysis, f"{spec_path}: analyses.{i}")
    paths = {name: str(shapes_world.cached_dataset(d.seed, d.n, d.size)) for name, d in spec.datasets.items()}
    n = len(level_combinations(spec)) * len(spec.seeds) if spec.factors else 0
    with progress() as bar:  # a design of hundreds of variants takes a while: each phase is a named step
        variants = expand_variants(spec, spec_dir, paths, tick=_step(bar, f"resolving {n:,} variant runs", n))
        pending = []
        tick = _step(bar, "checking what each variant starts from", n)
        for v in variants:  # a variant that starts from another run needs it finished, before anything is written
            tick()
            init_run(v.cfg)
            try:
                resolved = resolve_config(v.cfg)
            except MeasurementNeeded as needed:
                pending.append((needed.measurement, needed.key, v.run_name))
                continue
            if resolved is not v.cfg:  # DPVR `layer: auto` -> the measured k
                v.cfg, v.resolved = resolved, resolved.resolved()
        externals = resolve_externals(spec, spec_dir, variants)
        control = {
            "passed": True,
            "config": check_config_control(spec, variants, _step(bar, "control check: held-constant keys", n))
            if variants
            else {},
            "data_order": check_order_control(spec, variants, _step(bar, "control check: data order", n))
            if variants
            else {},
            "seeds": spec.seeds,
            "variants": [v.name for v in variants if v.seed == spec.seeds[0]],
            "external": control_record(externals),  # what the check cannot verify for them, and their files' hashes
            "environment": environment(),
        }
    return Study(spec, variants, control, StudyDir(out or Path("runs") / spec.name), pending, externals)


def _step(bar, title: str, total: int):
    """A progress task of `total` units and the callable that advances it by one."""
    job = bar.add_task(title, total=total, info="")
    return lambda: bar.advance(job)


def is_complete(study: Study, v: Variant) -> bool:
    """The variant's marker names its current inputs and every evaluation mode's records are on disk (a deleted
    predictions file makes it incomplete: it is evaluated again, not retrained)."""
    run = study.run_dir(v)
    if not run.done.is_file():
        return False
    try:
        current = io.read_json(run.done)["inputs"] == variant_inputs(v, study.spec)
    except (UserError, KeyError, TypeError):
        return False
    return current and all(run.predictions(m).is_file() and run.metrics(m).is_file() for m in modes(study.spec))


def measure_pending(spec_path: str | Path, study: Study) -> Study:
    """Make the measurements the variants' configs are read off (a named step each), then prepare again."""
    if not study.pending:
        return study
    for measurement, key, run_name in study.pending:
        console.print(f"{run_name}: {key} is read off the {measurement.describe()}", highlight=False, soft_wrap=True)
    if is_main_process():
        measure_all([m for m, _, _ in study.pending])
    barrier()
    return prepare_study(spec_path, study.dir.path)


def run_study(
    spec_path: str | Path,
    out: str | Path | None = None,
    only: list[str] | None = None,
    jobs: int = 1,
    prepare_process: Callable[[], None] | None = None,
) -> Study:
    """Train and evaluate every variant not yet complete; combine results once all are. `only` limits the
    variants run by this call (names like `gen3`), for spreading a study over jobs. Each variant's run is
    locked while it is written, so jobs of one study on different variants run side by side. `jobs` > 1 trains
    the runs in that many worker processes (`study.parallel`; `prepare_process` sets up each one). Nothing is
    written through a symbolic link inside the study directory (`vlmlab.io.confined`)."""
    if jobs > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        raise UserError("--jobs: a study launched with several processes (torchrun) runs its variants in turn", 2)
    study = measure_pending(spec_path, prepare_study(spec_path, out))
    with io.confined(study.dir.path):
        return _run_prepared(study, only, spec_path, jobs, prepare_process)


def _run_prepared(
    study: Study, only: list[str] | None, spec_path: str | Path, jobs: int, prepare_process: Callable[[], None] | None
) -> Study:
    known = {v.name for v in study.variants} | {e.name for e in study.external}
    for name in only or []:
        if name not in known:
            raise UserError(f"--only {name}: no such variant (variants: {', '.join(sorted(known))})", exit_code=2)
    todo = [v for v in study.variants if not only or v.name in only]
    if is_main_process():  # under torchrun / accelerate launch every process trains; one writes
        write_study_header(study, todo, only)
    barrier()
    pending = [v for v in todo if not is_complete(study, v)]
    if jobs > 1 and len(pending) > 1:
        run_in_workers(work_through, spec_path, study, pending, jobs, prepare_process)
    for i, v in enumerate(todo, start=1):
        if is_complete(study, v):
            console.print(f"[{i}/{len(todo)}] {v.run_name}: complete, skipped")
            continue
        console.print(f"[bold][{i}/{len(todo)}] {v.run_name}[/bold]: {_describe(v)}")
        run_variant(study, v)
    if is_main_process():
        for ext in study.external:
            if only and ext.name not in only:
                continue
            if is_scored(study.dir.path, ext):
                console.print(f"external {ext.name}: scored, skipped", highlight=False)
            else:
                with exclusive(study.dir.path, "study", console.print):
                    score_external(study.dir.path, ext, study_tasks(study.spec, study.variants))
    barrier()
    missing = [v.run_name for v in study.variants if not is_complete(study, v)]
    missing += [f"external {e.name}" for e in study.external if not is_scored(study.dir.path, e)]
    if missing:
        console.print(f"variants still to run: {', '.join(missing)} (results are combined once all are complete)")
        return study
    if is_main_process():
        with exclusive(study.dir.path, "study", console.print):
            write_results(study)
    barrier()
    return study


def write_study_header(study: Study, todo: list[Variant], only: list[str] | None = None) -> None:
    """Under the study's lock: its validated spec and control check, and no completion marker while any run of
    `todo` or any external variant (of `only`, when given) is still to be (re)made or scored (results about to
    change are no longer vouched for)."""
    study.dir.path.mkdir(parents=True, exist_ok=True)
    with exclusive(study.dir.path, "study", console.print):
        io.write_yaml(study.dir.spec, study.spec.model_dump(mode="json"))
        io.write_json(study.dir.control, study.control)
        stale = any(not is_complete(study, v) for v in todo) or any(
            not is_scored(study.dir.path, e) for e in study.external if not only or e.name in only
        )
        if stale:
            study.dir.complete.unlink(missing_ok=True)


def work_through(
    spec_path: str, out: str, names: list[str], threads: int, prepare, allowed: tuple[str, ...] = ()
) -> None:
    """One worker process of `--jobs`: every named run not complete and not held by another worker, in study order,
    with the grants of the command that started it (`allowed`) and no other."""
    if prepare is not None:
        prepare()
    torch.set_num_threads(threads)
    os.environ["VLMLAB_NO_PROGRESS"] = "1"  # several bars at once would interleave: a line per run instead
    try:
        with grants.granted(*allowed), io.confined(out):
            _work_through(spec_path, out, names)
    except UserError as exc:
        console.print(f"[red]error[/red]: {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


def _work_through(spec_path: str, out: str, names: list[str]) -> None:
    """The runs of `names` this worker takes, each under its lock (a run another worker holds is left to it)."""
    study = prepare_study(spec_path, out)
    for v in study.variants:
        if v.run_name not in names or is_complete(study, v):
            continue
        try:
            with exclusive(study.run_dir(v).path, "run"):
                if is_complete(study, v):  # finished by another worker since the check above
                    continue
                console.print(f"worker {os.getpid()}: {v.run_name}: training", highlight=False)
                run_variant(study, v)
                console.print(f"worker {os.getpid()}: {v.run_name}: done", highlight=False)
        except UserError as exc:
            if exc.exit_code != EXIT_BUSY:  # busy: another worker has it
                raise


def _describe(v: Variant) -> str:
    return ", ".join(f"{k}={json.dumps(val)}" for k, val in v.overrides.items())


def run_variant(study: Study, v: Variant) -> dict[str, Any]:
    """Train (resuming from the last checkpoint if a previous attempt stopped), evaluate every mode, mark done;
    the variant's run is locked meanwhile (one writer per run, across the jobs of a study)."""
    run = study.run_dir(v)
    with exclusive(run.path, "run", console.print) if is_main_process() else nullcontext():
        return _run_variant(study, v, run)


def _run_variant(study: Study, v: Variant, run) -> dict[str, Any]:
    if is_main_process():
        run.done.unlink(missing_ok=True)
        saved = read_yaml(run.config) if run.config.is_file() else None
        if saved is not None and normalized_config(saved) != v.resolved:
            recipe, refused = resume_differences(saved, v.resolved)
            if refused is None and not run.trained():  # only recipe fixes (lr, warmup, on_nonfinite): continue
                console.print(f"{v.run_name}: resuming with a changed recipe ({', '.join(recipe)})", soft_wrap=True)
            else:
                console.print(f"{v.run_name}: inputs changed since the last attempt; starting it afresh")
                _clear(run.path)
    barrier()
    t0 = time.perf_counter()
    if run.trained():
        model, cfg = load_run_model(run.path, device="cuda" if torch.cuda.is_available() else "cpu")
    else:
        resume = run.config.is_file()
        model, cfg = (
            Trainer(v.cfg, run.path, resume=resume, vision_cache=study.dir.vision_cache).run_training().model,
            v.cfg,
        )
    model.eval()
    t_eval = time.perf_counter()
    per_mode = {}
    for mode in modes(study.spec):
        started = time.perf_counter()
        evaluate_run(run.path, mode=mode, model=model, cfg=cfg)
        per_mode[mode.name] = time.perf_counter() - started
    done = {
        "inputs": variant_inputs(v, study.spec),
        "variant": v.name,
        "seed": v.seed,
        "levels": v.levels,
        # what an export's model card names: the study, and the fingerprint of everything it held constant
        "study": {"name": study.spec.name, "fingerprint": study.control["config"]["fingerprint"]},
        "eval_seconds": time.perf_counter() - t_eval,
        "eval_seconds_per_mode": per_mode,
        "seconds": time.perf_counter() - t0,
    }
    if is_main_process():
        io.write_json(run.done, done)
    return done


def _clear(path: Path) -> None:
    """Empty a run directory, keeping the lock this process holds on it (a link in it is removed, not followed)."""
    for entry in path.iterdir():
        if entry.name != LOCK:
            io.remove_tree(entry)


def job_script(spec_path: str | Path, study: Study) -> str:
    """A shell script with one command per variant (submit each line as a cluster job), then the combine step."""
    spec_arg, out = str(spec_path), str(study.dir.path)
    allowed = "".join(f" {flag}" for name, flag in grants.FLAGS.items() if grants.allows(name))  # this command's
    lines = [
        "#!/usr/bin/env bash",
        f"# {study.spec.name}: one job per variant; run them anywhere that sees {out}/.",
        "set -euo pipefail",
    ]
    for name in dict.fromkeys(v.name for v in study.variants):
        lines.append(f"vlmlab study {spec_arg} --out {out} --only {name}{allowed}")
    lines.append("# when every job has finished: combine the records, compute the analyses, write the report")
    lines.append(f"vlmlab study {spec_arg} --out {out}{allowed} && vlmlab report {out}")
    return "\n".join(lines) + "\n"
