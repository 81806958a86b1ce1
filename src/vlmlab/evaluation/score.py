"""`vlmlab score`: score answers produced elsewhere (another harness, LLaVA's own scripts) with vlmlab's metrics.

The answers are JSON lines `{"item_id": ..., "prediction": ...}` keyed by vlmlab's item ids (each format
documents its ids in docs/datasets.md); the output is what `vlmlab eval` writes — `predictions.parquet`
with the same columns and `metrics.json` with the same keys — so any model's answers sit beside a
vlmlab-trained variant's.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vlmlab import bounded, io
from vlmlab.config import DataSource, ImageConfig
from vlmlab.data.eval_mode import CLEAN
from vlmlab.errors import DataError, UserError
from vlmlab.evaluation.records import RECORD_COLUMNS, load_eval_sets, record, summarize

SHOWN = 5  # ids named in an error about unknown or missing answers


def read_answers(file: Path) -> dict[str, str]:
    """{item id: prediction} of a JSON-lines answers file (lines end at `\\n` only, so a raw U+2028 inside an
    answer is fine; bounded, `vlmlab.bounded`); a bad line or a repeated id is a DataError naming it."""
    if not file.is_file():
        raise DataError(f"{file}: answers file not found")
    answers: dict[str, str] = {}
    try:
        for lineno, rec in bounded.jsonl_records(file):
            where = f"{file}:{lineno}"
            if not isinstance(rec, dict) or "item_id" not in rec or "prediction" not in rec:
                raise DataError(f'{where}: expected {{"item_id": ..., "prediction": ...}}')
            if not isinstance(rec["prediction"], str):
                raise DataError(f"{where}: prediction must be a string")
            if not isinstance(rec["item_id"], (str, int)) or isinstance(rec["item_id"], bool):
                raise DataError(f"{where}: item_id must be a string (vlmlab's ids are strings, see docs/datasets.md)")
            item_id = str(rec["item_id"])
            if item_id in answers:
                raise DataError(f"{where}: item_id {item_id!r} answered twice")
            answers[item_id] = rec["prediction"]
    except DataError:
        raise
    except UserError as exc:
        raise DataError(str(exc)) from None
    return answers


def _first(ids: list[str]) -> str:
    return ", ".join(ids[:SHOWN]) + (", ..." if len(ids) > SHOWN else "")


def score_answers(source: DataSource, answers_file: Path, image: ImageConfig, out: Path) -> dict:
    """Score every item of `source` against the answers file; write `out/predictions.parquet` and `out/metrics.json`
    atomically. Box answers are read in the 0-99 frame of the processed image `image` describes. With a `limit`,
    the first `limit` items are scored and answers to the split's other items are passed over (a complete answers
    file scores a prefix); an answer to an item the split does not have is still refused."""
    limited = source.limit is not None
    [eval_set] = load_eval_sets([source.model_copy(update={"limit": None}) if limited else source], image, CLEAN)
    answers = read_answers(answers_file)
    every_id = [item.item_id for item in eval_set.items]
    known = set(every_id)
    unknown = [i for i in answers if i not in known]
    if unknown:
        raise DataError(
            f"{answers_file}: {len(unknown)} answers name items that {source.task}:{source.split} does not have "
            f"({_first(unknown)}); ids are vlmlab's, see docs/datasets.md{_id_hint(unknown, every_id)}"
        )
    items = eval_set.items[: source.limit] if limited else eval_set.items
    ids = [item.item_id for item in items]
    missing = [i for i in ids if i not in answers]
    if missing:
        raise DataError(
            f"{answers_file}: no answer for {len(missing)} of {len(ids)} items of {source.task}:"
            f"{source.split} ({_first(missing)}); answer every item, or score fewer with --limit"
        )
    rows = [record(item, eval_set.task, answers[item.item_id], CLEAN) for item in items]
    records = pd.DataFrame(rows, columns=RECORD_COLUMNS)
    tasks = {items[0].task: eval_set.task} if items else {}
    metrics = summarize(records, tasks)
    metrics["scored"] = {"answers": str(answers_file), "image": image.model_dump(mode="json")}
    if limited:
        metrics["scored"]["limit"] = source.limit
        metrics["scored"]["answers_passed_over"] = len(answers) - len(ids)
    io.write_parquet(out / "predictions.parquet", records)
    io.write_json(out / "metrics.json", metrics)
    return metrics


def _id_hint(unknown: list[str], known: list[str]) -> str:
    """A hint when the unknown ids are bare numbers (an integer `item_id`, or the benchmark's own id) and vlmlab's
    are not: what one of vlmlab's ids for this split looks like."""
    if known and all(i.lstrip("-").isdigit() for i in unknown) and not known[0].lstrip("-").isdigit():
        return (
            f" (item_id {unknown[0]} is a bare number; vlmlab's ids are strings such as {known[0]!r}: write "
            '"item_id" as that string)'
        )
    return ""
