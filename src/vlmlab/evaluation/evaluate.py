"""Evaluate a model on tasks: per-item records (Parquet) and accuracy per task and category."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from vlmlab import io
from vlmlab.config import DataSource, RunConfig
from vlmlab.data.dataset import VQADataset
from vlmlab.data.sources import load_source
from vlmlab.errors import ConfigError
from vlmlab.evaluation.generate import greedy_generate
from vlmlab.models.vlm import VisionLanguageModel
from vlmlab.progress import progress
from vlmlab.runs import RunDir

RECORD_COLUMNS = [
    "item_id", "task", "category", "question", "answer", "prediction", "score", "correct",
    "confidence", "stopped", "blind", "image",
]


def predict(
    model: VisionLanguageModel, cfg: RunConfig, sources: Sequence[DataSource], blind: bool = False
) -> pd.DataFrame:
    """Greedy answers for every item of every source, one row per item (see RECORD_COLUMNS)."""
    device = next(model.parameters()).device
    rows = []
    model.eval()
    with progress() as bar:
        for i, source in enumerate(sources):
            task, items = load_source(source, f"data.eval.{i}")
            data = VQADataset(items, model.llm, cfg.data.image, model.num_image_tokens, with_answers=False, blind=blind)
            bs = cfg.eval.batch_size
            job = bar.add_task(f"eval {source.task}/{source.split}{' (blind)' if blind else ''}", total=len(data), info="")
            for start in range(0, len(data), bs):
                batch = data.collate([data[j] for j in range(start, min(start + bs, len(data)))]).to(device)
                gen = greedy_generate(model, batch, cfg.eval.max_new_tokens)
                for row_i, idx in enumerate(batch.indices):
                    item = items[idx]
                    prediction = model.llm.decode(gen.token_ids[row_i])
                    score = task.score(prediction, item)
                    rows.append({
                        "item_id": item.item_id, "task": item.task, "category": item.category,
                        "question": item.question, "answer": item.answer, "prediction": prediction,
                        "score": float(score), "correct": bool(score >= 1.0), "confidence": gen.confidence[row_i],
                        "stopped": gen.stopped[row_i], "blind": blind, "image": item.image,
                    })
                bar.advance(job, len(batch.indices))
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def summarize(records: pd.DataFrame) -> dict:
    """Accuracy (mean score) and n: overall, per task, and per task/category."""

    def acc(frame: pd.DataFrame) -> dict:
        return {"accuracy": float(frame["score"].mean()) if len(frame) else float("nan"), "n": int(len(frame))}

    return {
        "overall": acc(records),
        "per_task": {t: acc(f) for t, f in records.groupby("task", sort=True)},
        "per_category": {f"{t}/{c}": acc(f) for (t, c), f in records.groupby(["task", "category"], sort=True)},
    }


def visual_reliance_gap(seen: pd.DataFrame, blind: pd.DataFrame) -> dict:
    """Accuracy with the image minus accuracy with a constant image, per task, on the items both share."""
    both = seen.merge(blind, on=["task", "item_id"], suffixes=("", "_blind"))
    return {
        task: {"gap": float(f["score"].mean() - f["score_blind"].mean()), "n": int(len(f))}
        for task, f in both.groupby("task", sort=True)
    }


def evaluate_run(
    run_dir: str | Path, sources: Sequence[DataSource] | None = None, blind: bool = False, model=None, cfg=None
) -> dict:
    """Evaluate a trained run; writes predictions[_blind].parquet and metrics[_blind].json atomically."""
    from vlmlab.runs import load_run_model

    run = RunDir(run_dir)
    if model is None:
        model, cfg = load_run_model(run.path, device="cuda" if torch.cuda.is_available() else "cpu")
    sources = list(sources) if sources else list(cfg.data.eval)
    if not sources:
        raise ConfigError("data.eval", "no evaluation tasks configured")
    records = predict(model, cfg, sources, blind=blind)
    metrics = summarize(records)
    other = run.predictions(blind=not blind)
    if other.is_file():
        seen, unseen = (records, pd.read_parquet(other)) if not blind else (pd.read_parquet(other), records)
        metrics["visual_reliance_gap"] = visual_reliance_gap(seen, unseen)
    io.write_parquet(run.predictions(blind), records)
    io.write_json(run.metrics(blind), metrics)
    return metrics
