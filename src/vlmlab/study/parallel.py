"""`vlmlab study --jobs N`: a study's runs trained and evaluated by N worker processes, each with its share of cores.

On a small CPU a tiny model may use one process per core better than one process with every core's threads
(benchmarks/bench_parallel.py measures which). The parts the runs share are built first, once, in this process
with every core (the LLM rungs' pretraining and the vision towers' pretraining, both cached), so they are the
same whatever N is; then the workers take the runs in study order, each run under its own lock (a run another
worker holds is left to it, and a run is checked complete inside its lock, so none is trained twice). The
workers' frozen-tower features reach each other through the cache (`models.vision.features`).

Each run is deterministic, but its numbers depend on the threads it trained with (a reduction's order): a study
trained with `--jobs 2` on 2 cores matches itself, not the same study trained with `--jobs 1`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from pathlib import Path

from vlmlab.config import VISION_PRETRAIN
from vlmlab.errors import UserError
from vlmlab.grants import allowed
from vlmlab.progress import console, progress
from vlmlab.registry import LLM_BACKBONES
from vlmlab.study.layout import Study
from vlmlab.study.spec import Variant


def threads_per_job(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def build_shared_parts(study: Study, runs: list[Variant]) -> None:
    """Every pretrained LLM rung and vision tower of `runs`, built (or found in the cache) here, in study order."""
    from vlmlab.measure.towers import pretrain_towers

    built = set()
    for v in runs:
        llm = v.cfg.model.llm
        cls = LLM_BACKBONES.get(llm.id)
        key = repr(llm.resolved())
        if key not in built and hasattr(cls, "pretrained_backbone") and getattr(llm.params, "init", "") == "pretrained":
            built.add(key)
            cls.pretrained_backbone(llm.params)
    towered = [(v.name, v.seed, v.cfg) for v in runs if any(s.kind is VISION_PRETRAIN for s in v.cfg.train.stages)]
    if towered:
        with progress() as bar:
            pretrain_towers(towered, study.dir.vision_cache, bar)


def run_in_workers(
    worker: Callable, spec_path: str | Path, study: Study, runs: list[Variant], jobs: int, prepare: Callable | None
) -> None:
    """Train and evaluate `runs` with `jobs` processes running `worker(spec_path, out, run names, threads, prepare,
    grants)` (a module-level function: the processes are spawned); `prepare` sets up a fresh process (the
    application's part registries); `grants` are this command's (`vlmlab.grants`), which a spawned process would
    not inherit. A worker that fails stops the study with its exit code once the others are done."""
    build_shared_parts(study, runs)
    threads = threads_per_job(jobs)
    console.print(f"training {len(runs)} runs in {jobs} processes of {threads} thread(s) each", highlight=False)
    ctx = mp.get_context("spawn")
    names = [v.run_name for v in runs]
    workers = [
        ctx.Process(target=worker, args=(str(spec_path), str(study.dir.path), names, threads, prepare, allowed()))
        for _ in range(jobs)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    failed = [w.exitcode for w in workers if w.exitcode]
    if failed:
        raise UserError(
            f"{study.dir.path}: a worker process stopped (exit {failed[0]}); its message is above", failed[0]
        )
