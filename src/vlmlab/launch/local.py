"""`--launcher local`: the same jobs through submitit's LocalExecutor on this machine, `array_parallelism` at a
time (default one), then the combine job; the submitting process waits and shows their progress."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from vlmlab import grants
from vlmlab.errors import UserError
from vlmlab.launch.jobs import CombineJob, RunJob
from vlmlab.launch.records import record
from vlmlab.progress import console, progress

POLL_S = 0.5


def run_local(folder: Path, todo, shapes, spec: str, out: str, executor: Callable, parallel: int) -> int:
    """Run every job of `todo` (`shapes[run_name]` says each one's resources), then the combine job if all runs
    ended complete. Returns 0, or 1 when a run failed (its log is named; submitting again resumes it)."""
    queue, running, failed = list(todo), [], []
    with progress() as bar:
        task = bar.add_task("study jobs", total=len(todo) + 1, info="")
        while queue or running:
            while queue and len(running) < max(1, parallel):
                v = queue.pop(0)
                shape = shapes[v.run_name]
                job = executor(shape).submit(
                    RunJob(), spec, out, v.name, v.seed, list(shape.command or []) or None, grants.allowed()
                )
                record(folder, "local", {v.run_name: job.job_id})
                running.append((v, job))
                bar.update(task, info=f"{v.run_name} (job {job.job_id})")
            time.sleep(POLL_S)
            for v, job in [r for r in running if r[1].done()]:
                running.remove((v, job))
                bar.advance(task)
                error = _failure(job)
                if error:
                    failed.append((v, job, error))
        if failed:
            for v, job, error in failed:
                console.print(f"[red]{v.run_name} failed[/red]: {error} (log: {job.paths.stderr})", soft_wrap=True)
            console.print("submit the same command again: complete runs are skipped, the rest resume", soft_wrap=True)
            return 1
        bar.update(task, info="combine, analyses, report")
        job = executor(shapes["combine"]).submit(CombineJob(), spec, out, grants.allowed())
        record(folder, "local", {}, job.job_id)
        while not job.done():
            time.sleep(POLL_S)
        bar.advance(task)
    error = _failure(job)
    if error:
        raise UserError(f"the combine job failed: {error} (log: {job.paths.stderr})")
    console.print(f"results, analyses and report in {out} (report: {job.result()})", soft_wrap=True, highlight=False)
    return 0


def _failure(job) -> str | None:
    """The last line of a finished job's error, or None when it succeeded."""
    try:
        exc = job.exception()
    except Exception as err:  # the job left no result (killed): submitit cannot say more
        return f"{type(err).__name__}: {err}".splitlines()[0]
    if exc is None:
        return None
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
