"""Evaluate a model on tasks: per-item records (Parquet) and accuracy per task and category."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from vlmlab import grants, io
from vlmlab.config import DataSource, RunConfig
from vlmlab.data.context import fit_to_context
from vlmlab.data.dataset import VQADataset
from vlmlab.data.eval_mode import BLIND, CLEAN, EvalMode
from vlmlab.data.loader import batch_loader, image_cache_bytes, resolve_workers
from vlmlab.data.tasks.base import Task
from vlmlab.distributed import is_main_process, work_group
from vlmlab.errors import ConfigError
from vlmlab.evaluation.generate import greedy_generate
from vlmlab.evaluation.records import RECORD_COLUMNS, load_eval_sets, record, summarize
from vlmlab.locks import exclusive
from vlmlab.metrics import accuracy
from vlmlab.models.vision import features
from vlmlab.models.vlm import VisionLanguageModel
from vlmlab.progress import progress
from vlmlab.runs import RunDir, load_run_model


def predict(
    model: VisionLanguageModel,
    cfg: RunConfig,
    sources: Sequence[DataSource],
    mode: EvalMode = CLEAN,
    tasks: dict[str, Task] | None = None,
) -> pd.DataFrame:
    """Greedy answers for every item of every source, one row per item (see RECORD_COLUMNS), with the images
    shown as `mode` says (clean, blind, perturbed). `tasks`, when given, receives the Task that scored each
    task id (for `summarize`)."""
    device = next(model.parameters()).device
    rank, world = work_group()
    workers = resolve_workers(cfg.data.workers)
    rows = []
    model.eval()
    sets = load_eval_sets(sources, cfg.data.image, mode)
    with progress(disable=rank != 0) as bar:
        for i, eval_set in enumerate(sets):
            task, source = eval_set.task, eval_set.source
            name = f"data.eval.{i} ({source.task}/{source.split})"
            items = fit_to_context(
                eval_set.items, task, model.llm, model.num_image_tokens, cfg.eval.max_new_tokens, name
            )
            if tasks is not None:
                tasks.update({it.task: task for it in items[:1]})
            data = VQADataset(
                items,
                model.llm,
                cfg.data.image,
                model.num_image_tokens,
                with_answers=False,
                mode=mode,
                image_cache_bytes=image_cache_bytes(workers),
            )
            bs = cfg.eval.batch_size
            shown = "" if mode == CLEAN else f" ({mode.name})"
            job = bar.add_task(f"eval {source.task}/{source.split}{shown}", total=len(data), info="")
            # whole batches are dealt round-robin over the processes: no item twice, none padded or lost
            mine = [list(range(start, min(start + bs, len(data)))) for start in range(0, len(data), bs)][rank::world]
            bar.advance(job, len(data) - sum(len(b) for b in mine))  # the other processes' share
            for batch in batch_loader(data, mine, workers, pin_memory=device.type == "cuda"):
                batch = batch.to(device)
                gen = greedy_generate(model, batch, cfg.eval.max_new_tokens)
                for row_i, idx in enumerate(batch.indices):
                    prediction = model.llm.decode(gen.token_ids[row_i])
                    row = record(items[idx], task, prediction, mode, gen.confidence[row_i], gen.stopped[row_i])
                    rows.append({"_order": (i, idx), **row})
                bar.advance(job, len(batch.indices))
    if rank == 0:
        features.flush()  # the frozen tower's features of these images, for later evaluations and runs
    if world > 1:  # every process returns all records, in the order one process would have produced them
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, rows)
        rows = [row for part in gathered for row in part]
    rows.sort(key=lambda row: row["_order"])
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def accuracy_difference(reference: pd.DataFrame, other: pd.DataFrame) -> dict:
    """Per task: accuracy of `reference` minus accuracy of `other`, over the items both scored.

    Clean minus blind is the visual-reliance gap; clean minus perturbed is the perturbation drop."""
    both = reference.merge(other, on=["task", "item_id"], suffixes=("", "_other"))
    return {
        task: {"gap": accuracy(f) - accuracy(f, "score_other"), "n": int(len(f))}
        for task, f in both.groupby("task", sort=True)
    }


def evaluate_run(
    run_dir: str | Path,
    sources: Sequence[DataSource] | None = None,
    mode: EvalMode = CLEAN,
    model=None,
    cfg=None,
) -> dict:
    """Evaluate a trained run; writes predictions{mode.suffix}.parquet and metrics{mode.suffix}.json atomically
    (suffix: none, `_blind`, or the perturbation's tag such as `_noise-0.1`), holding the run's lock."""
    run = RunDir(run_dir)
    if is_main_process() and run.path.is_dir():
        with exclusive(run.path, "run"):
            return _evaluate(run, sources, mode, model, cfg)
    return _evaluate(run, sources, mode, model, cfg)


def _evaluate(run: RunDir, sources, mode: EvalMode, model, cfg) -> dict:
    if model is None:
        model, cfg = load_run_model(run.path, device="cuda" if torch.cuda.is_available() else "cpu")
    sources = list(sources) if sources else list(cfg.data.eval)
    if not sources:
        raise ConfigError("data.eval", "no evaluation tasks configured")
    tasks: dict[str, Task] = {}
    records = predict(model, cfg, sources, mode, tasks)
    metrics = summarize(records, tasks)
    clean = run.predictions(CLEAN)
    if mode != CLEAN:
        if clean.is_file():
            key = "visual_reliance_gap" if mode.blind else "perturbation_drop"
            metrics[key] = accuracy_difference(io.read_parquet(clean), records)
    elif run.predictions(BLIND).is_file():
        metrics["visual_reliance_gap"] = accuracy_difference(records, io.read_parquet(run.predictions(BLIND)))
    if grants.notes(str(run.path)):  # weights or config used without full verification: the outputs say so
        metrics["provenance"] = {"unverified": grants.notes(str(run.path))}
    if is_main_process():  # one writer; every process gets the metrics
        io.write_parquet(run.predictions(mode), records)
        io.write_json(run.metrics(mode), metrics)
    return metrics
