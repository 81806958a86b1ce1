"""`vlmlab score`: score answers produced elsewhere (another harness, LLaVA's own scripts) with vlmlab's metrics.

The answers are JSON lines `{"item_id": ..., "prediction": ...}` keyed by vlmlab's item ids (each format
documents its ids in docs/datasets.md); the output is what `vlmlab eval` writes — `predictions.parquet`
with the same columns and `metrics.json` with the same keys — so any model's answers sit beside a
vlmlab-trained variant's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vlmlab import io
from vlmlab.config import DataSource, ImageConfig
from vlmlab.data.eval_mode import CLEAN
from vlmlab.errors import DataError
from vlmlab.evaluation.records import RECORD_COLUMNS, load_eval_sets, record, summarize

SHOWN = 5  # ids named in an error about unknown or missing answers


def read_answers(file: Path) -> dict[str, str]:
    """{item id: prediction} of a JSON-lines answers file; a bad line or a repeated id is a DataError naming it."""
    if not file.is_file():
        raise DataError(f"{file}: answers file not found")
    answers: dict[str, str] = {}
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{file}: not UTF-8 text") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{file}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict) or "item_id" not in rec or "prediction" not in rec:
            raise DataError(f'{where}: expected {{"item_id": ..., "prediction": ...}}')
        if not isinstance(rec["prediction"], str):
            raise DataError(f"{where}: prediction must be a string")
        item_id = str(rec["item_id"])
        if item_id in answers:
            raise DataError(f"{where}: item_id {item_id!r} answered twice")
        answers[item_id] = rec["prediction"]
    return answers


def _first(ids: list[str]) -> str:
    return ", ".join(ids[:SHOWN]) + (", ..." if len(ids) > SHOWN else "")


def score_answers(source: DataSource, answers_file: Path, image: ImageConfig, out: Path) -> dict:
    """Score every item of `source` against the answers file; write `out/predictions.parquet` and `out/metrics.json`
    atomically. Box answers are read in the 0-99 frame of the processed image `image` describes."""
    [eval_set] = load_eval_sets([source], image, CLEAN)
    answers = read_answers(answers_file)
    ids = [item.item_id for item in eval_set.items]
    known = set(ids)
    unknown = [i for i in answers if i not in known]
    if unknown:
        raise DataError(
            f"{answers_file}: {len(unknown)} answers name items that {source.task}:{source.split} does not have "
            f"({_first(unknown)}); ids are vlmlab's, see docs/datasets.md"
        )
    missing = [i for i in ids if i not in answers]
    if missing:
        raise DataError(
            f"{answers_file}: no answer for {len(missing)} of {len(ids)} items of {source.task}:"
            f"{source.split} ({_first(missing)}); answer every item, or score fewer with --limit"
        )
    rows = [record(item, eval_set.task, answers[item.item_id], CLEAN) for item in eval_set.items]
    records = pd.DataFrame(rows, columns=RECORD_COLUMNS)
    tasks = {eval_set.items[0].task: eval_set.task} if eval_set.items else {}
    metrics = summarize(records, tasks)
    metrics["scored"] = {"answers": str(answers_file), "image": image.model_dump(mode="json")}
    io.write_parquet(out / "predictions.parquet", records)
    io.write_json(out / "metrics.json", metrics)
    return metrics
