"""Evaluate a model on tasks: per-item records (Parquet) and accuracy per task and category."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from vlmlab import io
from vlmlab.config import DataSource, RunConfig
from vlmlab.data.dataset import VQADataset
from vlmlab.data.eval_mode import BLIND, CLEAN, EvalMode
from vlmlab.data.sources import load_source
from vlmlab.distributed import is_main_process, process_group
from vlmlab.errors import ConfigError
from vlmlab.evaluation.generate import greedy_generate
from vlmlab.metrics import accuracy
from vlmlab.models.vlm import VisionLanguageModel
from vlmlab.progress import progress
from vlmlab.runs import RunDir, load_run_model

RECORD_COLUMNS = [
    "item_id",
    "task",
    "category",
    "question",
    "answer",
    "prediction",
    "score",
    "correct",
    "confidence",
    "stopped",
    "blind",
    "perturb",
    "image",
]


def predict(
    model: VisionLanguageModel,
    cfg: RunConfig,
    sources: Sequence[DataSource],
    mode: EvalMode = CLEAN,
) -> pd.DataFrame:
    """Greedy answers for every item of every source, one row per item (see RECORD_COLUMNS), with the images
    shown as `mode` says (clean, blind, perturbed)."""
    device = next(model.parameters()).device
    rank, world = process_group()
    rows = []
    model.eval()
    with progress(disable=rank != 0) as bar:
        for i, source in enumerate(sources):
            task, items = load_source(source, f"data.eval.{i}", cfg.data.image)
            items = [replace(it, answer=mode.answer(it.answer, cfg.data.image.size)) for it in items]
            data = VQADataset(
                items,
                model.llm,
                cfg.data.image,
                model.num_image_tokens,
                with_answers=False,
                mode=mode,
            )
            bs = cfg.eval.batch_size
            shown = "" if mode == CLEAN else f" ({mode.name})"
            job = bar.add_task(f"eval {source.task}/{source.split}{shown}", total=len(data), info="")
            for b, start in enumerate(range(0, len(data), bs)):
                if b % world != rank:  # whole batches are dealt round-robin: no item twice, none padded or lost
                    bar.advance(job, min(bs, len(data) - start))
                    continue
                batch = data.collate([data[j] for j in range(start, min(start + bs, len(data)))]).to(device)
                gen = greedy_generate(model, batch, cfg.eval.max_new_tokens)
                for row_i, idx in enumerate(batch.indices):
                    item = items[idx]
                    prediction = model.llm.decode(gen.token_ids[row_i])
                    score = task.score(prediction, item)
                    rows.append(
                        {
                            "_order": (i, idx),
                            "item_id": item.item_id,
                            "task": item.task,
                            "category": item.category,
                            "question": item.question,
                            "answer": item.answer,
                            "prediction": prediction,
                            "score": float(score),
                            "correct": bool(score >= 1.0),
                            "confidence": gen.confidence[row_i],
                            "stopped": gen.stopped[row_i],
                            "blind": mode.blind,
                            "perturb": mode.perturb_tag,
                            "image": item.image,
                        }
                    )
                bar.advance(job, len(batch.indices))
    if world > 1:  # every process returns all records, in the order one process would have produced them
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, rows)
        rows = [row for part in gathered for row in part]
    rows.sort(key=lambda row: row["_order"])
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def summarize(records: pd.DataFrame) -> dict:
    """Accuracy (mean score) and n: overall, per task, and per task/category."""

    def acc(frame: pd.DataFrame) -> dict:
        return {"accuracy": accuracy(frame), "n": int(len(frame))}

    return {
        "overall": acc(records),
        "per_task": {t: acc(f) for t, f in records.groupby("task", sort=True)},
        "per_category": {f"{t}/{c}": acc(f) for (t, c), f in records.groupby(["task", "category"], sort=True)},
    }


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
    (suffix: none, `_blind`, or the perturbation's tag such as `_noise-0.1`)."""
    run = RunDir(run_dir)
    if model is None:
        model, cfg = load_run_model(run.path, device="cuda" if torch.cuda.is_available() else "cpu")
    sources = list(sources) if sources else list(cfg.data.eval)
    if not sources:
        raise ConfigError("data.eval", "no evaluation tasks configured")
    records = predict(model, cfg, sources, mode)
    metrics = summarize(records)
    clean = run.predictions(CLEAN)
    if mode != CLEAN:
        if clean.is_file():
            key = "visual_reliance_gap" if mode.blind else "perturbation_drop"
            metrics[key] = accuracy_difference(pd.read_parquet(clean), records)
    elif run.predictions(BLIND).is_file():
        metrics["visual_reliance_gap"] = accuracy_difference(records, pd.read_parquet(run.predictions(BLIND)))
    if is_main_process():  # one writer; every process gets the metrics
        io.write_parquet(run.predictions(mode), records)
        io.write_json(run.metrics(mode), metrics)
    return metrics
