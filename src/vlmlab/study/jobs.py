"""A study split into jobs: one run (variant x seed) per job, writing only its own run directory (its lock), and
a check of which runs are still to make. The combine step is `run_study` once every run is complete."""

from __future__ import annotations

from pathlib import Path

from vlmlab.distributed import barrier
from vlmlab.errors import UserError
from vlmlab.progress import console
from vlmlab.study.layout import Study
from vlmlab.study.runner import is_complete, measure_pending, prepare_study, run_variant
from vlmlab.study.spec import Variant


def find_run(study: Study, variant: str, seed: int) -> Variant:
    for v in study.variants:
        if v.name == variant and v.seed == seed:
            return v
    runs = ", ".join(v.run_name for v in study.variants)
    raise UserError(f"{variant}/seed-{seed}: no such run in {study.spec.name} (runs: {runs})", exit_code=2)


def run_one(spec_path: str | Path, out: str | Path, variant: str, seed: int) -> str:
    """Train and evaluate one run of the study unless it is complete (then skip it); resumes from the run's last
    checkpoint when an earlier job stopped (killed, preempted, out of time). Returns `complete` or `skipped`.
    Repeats the control check first, so a job on a machine that resolves the variant differently stops."""
    study = measure_pending(spec_path, prepare_study(spec_path, out))
    v = find_run(study, variant, seed)
    if is_complete(study, v):
        console.print(f"{v.run_name}: complete, skipped")
        return "skipped"
    console.print(f"[bold]{v.run_name}[/bold]: training and evaluating (resumes from its last checkpoint if any)")
    run_variant(study, v)
    barrier()
    return "complete"


def missing_runs(study: Study) -> list[Variant]:
    """The runs whose outputs are not complete for their current inputs."""
    return [v for v in study.variants if not is_complete(study, v)]
