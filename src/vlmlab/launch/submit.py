"""Submit a study through submitit: its incomplete runs as job arrays (one array per set of resources), then a
combine job that waits for them (SLURM: `--dependency=afterany`; local: the submitting process waits).

A second submission of the same study submits only the runs that are not complete, and refuses while jobs
of an earlier submission are still queued or running (`vlmlab.launch.records`).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from vlmlab import grants
from vlmlab.errors import EXIT_ENVIRONMENT, ConfigError, UserError
from vlmlab.launch.jobs import CombineJob, RunJob
from vlmlab.launch.local import run_local
from vlmlab.launch.records import record, refuse_while_active
from vlmlab.progress import console
from vlmlab.study.jobs import missing_runs
from vlmlab.study.launcher import LauncherSpec, Resources, minutes
from vlmlab.study.runner import prepare_study, write_study_header

LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # a local job has no scheduler limit unless `time` is set
SHIPPED = {"ddp": "ddp.yaml", "fsdp": "fsdp.yaml", "zero2": "deepspeed-zero2.yaml", "zero3": "deepspeed-zero3.yaml"}


@dataclass(frozen=True)
class JobShape:
    """What the scheduler is asked for; runs with the same shape go in one array."""

    gpus: int
    nodes: int
    cpus: int
    mem_gb: float | None
    minutes: int
    requeues: int
    partition: str | None
    command: tuple[str, ...] | None


def submit_study(spec_path: str | Path, out: str | Path | None, launcher: LauncherSpec, cluster: str) -> int:
    """Submit what the study still needs; `cluster` is `slurm` or `local`. Returns the exit code."""
    study = prepare_study(spec_path, out)
    folder = Path(launcher.folder) if launcher.folder else study.dir.path / "launcher"
    refuse_while_active(folder)
    todo = missing_runs(study)
    if not todo and study.dir.complete.is_file() and study.dir.report_html.is_file():
        console.print(f"{study.spec.name}: every run is complete and the report written; nothing to submit")
        return 0
    shapes = _shapes(spec_path, study, todo, launcher, cluster)
    write_study_header(study, study.variants)
    spec, out_dir = str(Path(spec_path).resolve()), str(study.dir.path.resolve())
    console.print(
        f"{study.spec.name}: {len(study.variants) - len(todo)} of {len(study.variants)} runs complete; "
        f"submitting {len(todo)} and the combine job ({cluster}, logs in {folder})",
        soft_wrap=True,
        highlight=False,
    )
    if cluster == "local":
        executor = lambda shape: _executor(folder, cluster, launcher, shape)  # noqa: E731
        return run_local(folder, todo, shapes, spec, out_dir, executor, launcher.array_parallelism or 1)
    groups: dict[JobShape, list] = defaultdict(list)
    for v in todo:
        groups[shapes[v.run_name]].append(v)
    job_ids: dict[str, str] = {}
    for shape, runs in groups.items():
        executor = _executor(folder, cluster, launcher, shape)
        with executor.batch():
            jobs = [
                executor.submit(RunJob(), spec, out_dir, v.name, v.seed, _list(shape.command), grants.allowed())
                for v in runs
            ]
        for v, job in zip(runs, jobs):
            job_ids[v.run_name] = job.job_id
            console.print(f"  {v.run_name}: job {job.job_id}", highlight=False)
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids.values()})
    combine = _executor(folder, cluster, launcher, shapes["combine"], arrays)
    job = combine.submit(CombineJob(), spec, out_dir, grants.allowed())
    record(folder, cluster, job_ids, job.job_id)
    console.print(
        f"  combine, analyses and report: job {job.job_id} (after {', '.join(arrays) or 'nothing'})\n"
        f"follow them with squeue -u $USER (logs: {folder}); when the combine job ends, the results, analyses and "
        f"report are in {out_dir}. A run that failed: submit the same command again (complete runs are skipped, "
        "stopped ones resume from their last checkpoint).",
        highlight=False,
        soft_wrap=True,
    )
    return 0


def _shapes(spec_path, study, todo, launcher: LauncherSpec, cluster: str) -> dict[str, JobShape]:
    """Each run's job shape, and the combine job's (`combine`). `time: auto` on SLURM takes the plan's projection."""
    plans = {}
    needs_plan = cluster == "slurm" and any(launcher.for_variant(v.name).time in (None, "auto") for v in todo)
    if needs_plan:
        from vlmlab.plan.study import plan_study

        try:
            plans = {p.name: p for p in plan_study(spec_path, launcher).variants}
        except UserError as exc:
            raise ConfigError(
                "launcher.time", f"auto needs the study's plan, which failed ({exc}); set a time"
            ) from None
        for p in plans.values():
            if not p.fits:
                console.print(
                    f"[yellow]warning[/yellow]: {p.name} is estimated at {p.peak.total / 2**30:,.1f} GiB per GPU, "
                    f"more than {launcher.gpu} holds (vlmlab study --plan: how many GPUs it needs)",
                    soft_wrap=True,
                    highlight=False,
                )
    shapes = {}
    for v in todo:
        res = launcher.for_variant(v.name)
        shapes[v.run_name] = _shape(res, launcher, cluster, plans.get(v.name), Path(spec_path).parent)
    shapes["combine"] = _shape(launcher.for_variant(None), launcher, cluster, None, Path(spec_path).parent)
    return shapes


def _shape(res: Resources, launcher: LauncherSpec, cluster: str, plan, spec_dir: Path) -> JobShape:
    gpus, nodes = res.gpus_per_node if res.gpus_per_node is not None else 1, res.nodes or 1
    if res.time not in (None, "auto"):
        mins, requeues = minutes(res.time, "launcher.time"), launcher.max_requeue
    elif plan is not None:
        from vlmlab.plan.study import job_minutes

        mins, requeues = job_minutes(plan, launcher, res)
    else:
        mins, requeues = (LOCAL_TIMEOUT_MIN if cluster == "local" else 24 * 60), launcher.max_requeue
    command = _accelerate(res, launcher, spec_dir) if gpus * nodes > 1 else None
    cpus = (res.cpus_per_gpu or 8) * max(1, gpus)
    return JobShape(gpus, nodes, cpus, res.mem_gb, mins, requeues, res.partition, command)


def _accelerate(res: Resources, launcher: LauncherSpec, spec_dir: Path) -> tuple[str, ...]:
    """`accelerate launch` with the strategy's config over the job's GPUs (its CLI flags win over the file's)."""
    if launcher.accelerate_config:
        config = Path(launcher.accelerate_config)
        config = config if config.is_absolute() else spec_dir / config
        key = "launcher.accelerate_config"
    else:
        import vlmlab

        config = Path(vlmlab.__file__).resolve().parents[2] / "configs" / "accelerate" / SHIPPED[res.strategy or "ddp"]
        key = "launcher.strategy"
    if not config.is_file():
        raise ConfigError(key, f"{config}: accelerate config not found (set launcher.accelerate_config to one)")
    processes = (res.gpus_per_node or 1) * (res.nodes or 1)
    return (
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "--num_processes",
        str(processes),
        "--num_machines",
        str(res.nodes or 1),
    )


def _executor(folder: Path, cluster: str, launcher: LauncherSpec, shape: JobShape, after: list[str] | tuple = ()):
    """A submitit executor asking for `shape`; on SLURM, starting only after the jobs `after` ended (any state)."""
    try:
        executor = submitit.AutoExecutor(
            folder=folder, cluster=cluster, slurm_max_num_timeout=shape.requeues, local_max_num_timeout=shape.requeues
        )
    except RuntimeError as exc:  # submitit found no `srun`: not a SLURM machine
        raise UserError(f"--launcher {cluster}: {exc}", exit_code=EXIT_ENVIRONMENT) from None
    params: dict[str, Any] = {
        "name": "vlmlab",
        "timeout_min": shape.minutes,
        "nodes": shape.nodes,
        "tasks_per_node": 1,
        "gpus_per_node": shape.gpus,
        "cpus_per_task": shape.cpus,
        "mem_gb": shape.mem_gb,
    }
    if cluster == "slurm":
        extra = {k: v for k, v in launcher.sbatch.items()}
        if after:
            extra["dependency"] = "afterany:" + ":".join(after)
        params.update(
            slurm_partition=shape.partition,
            slurm_account=launcher.account,
            slurm_qos=launcher.qos,
            slurm_constraint=launcher.constraint,
            slurm_array_parallelism=launcher.array_parallelism or 64,
            slurm_setup=launcher.setup or None,
            slurm_additional_parameters=extra or None,
        )
    else:
        params.update(local_setup=launcher.setup or None)
    executor.update_parameters(**params)
    return executor


def _list(command) -> list[str] | None:
    return list(command) if command else None
