"""`vlmlab score`: score answers produced elsewhere (another harness, LLaVA's own scripts) with vlmlab's metrics.

The answers are JSON lines `{"item_id": ..., "prediction": ...[, "confidence": p]}` keyed by vlmlab's item ids
(each format documents its ids in docs/datasets.md), or a harness's own output read as it is (`--from
lmms-eval`: its `--log_samples` file; `--from vlmevalkit`: its prediction table; see `harness_formats` and
`harness_mapping`). The output is what `vlmlab eval` writes — `predictions.parquet` with the same columns and
`metrics.json` with the same keys — so any model's answers sit beside a vlmlab-trained variant's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from vlmlab import bounded, io
from vlmlab.config import DataSource, ImageConfig
from vlmlab.data.eval_mode import CLEAN
from vlmlab.errors import DataError, UserError
from vlmlab.evaluation import harness_formats
from vlmlab.evaluation.harness_mapping import lmms_eval_expectation, map_rows, task_format
from vlmlab.evaluation.records import RECORD_COLUMNS, EvalSet, load_eval_sets, record, summarize
from vlmlab.registry import TASKS
from vlmlab.run_layout import RunDir

SHOWN = 5  # ids named in an error about unknown or missing answers


def read_answers(file: Path, confidences: dict[str, float] | None = None) -> dict[str, str]:
    """{item id: prediction} of a JSON-lines answers file (lines end at `\\n` only, so a raw U+2028 inside an
    answer is fine; bounded, `vlmlab.bounded`); a bad line or a repeated id is a DataError naming it. A line's
    optional `confidence` (a probability, or null) goes into `confidences` when given."""
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
            confidence = rec.get("confidence")
            if confidence is not None:
                if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 <= confidence <= 1:
                    raise DataError(f"{where}: confidence must be a probability in [0, 1] (or null)")
                if confidences is not None:
                    confidences[item_id] = float(confidence)
    except DataError:
        raise
    except UserError as exc:
        raise DataError(str(exc)) from None
    return answers


def _first(ids: list[str]) -> str:
    return ", ".join(ids[:SHOWN]) + (", ..." if len(ids) > SHOWN else "")


@dataclass(frozen=True)
class AnswerFile:
    """Answers produced elsewhere, and how to read them."""

    file: Path
    fmt: str = "vlmlab"  # vlmlab (JSON lines by item id), lmms-eval, vlmevalkit, or auto (by the file's content)
    harness_task: str | None = None  # lmms-eval's task name (default: from `*_samples_<task>.jsonl`)
    index_map: Path | None = None  # CSV/TSV: the harness's doc_id / index -> vlmlab item_id
    docs: Path | None = None  # lmms-eval: the task's dataset rows (parquet or JSON lines), doc_id = position


def score_answers(source: DataSource, answers_file: Path | AnswerFile, image: ImageConfig, out: Path) -> dict:
    """Score the items of `source` against the answers; write `out/predictions.parquet` and `out/metrics.json`
    atomically. Box answers are read in the 0-99 frame of the processed image `image` describes."""
    records, metrics = score_records(source, answers_file, image)
    io.write_parquet(RunDir(out).predictions(), records)  # read back as a run's clean records
    io.write_json(RunDir(out).metrics(), metrics)
    return metrics


def score_records(source: DataSource, answers: Path | AnswerFile, image: ImageConfig) -> tuple[pd.DataFrame, dict]:
    """(records, metrics) of the answers against `source`'s items. vlmlab answers must answer every item; a
    harness's rows score the items they map to (the harness may have run a subset), the rest counted. With a
    `limit`, the first `limit` items are scored and answers to the split's other items are passed over (a
    complete answers file scores a prefix); an answer to an item the split does not have is still refused."""
    spec = answers if isinstance(answers, AnswerFile) else AnswerFile(Path(answers))
    fmt = harness_formats.detect_format(spec.file) if spec.fmt == "auto" else spec.fmt
    if fmt not in harness_formats.FORMATS:
        raise DataError(f"{spec.file}: unknown answers format {fmt!r} (known: {', '.join(harness_formats.FORMATS)})")
    harness_task = _harness_task(source, spec, fmt)
    limited = source.limit is not None
    [eval_set] = load_eval_sets([source.model_copy(update={"limit": None}) if limited else source], image, CLEAN)
    in_scope = eval_set.items[: source.limit] if limited else eval_set.items
    if fmt == "vlmlab":
        confidences: dict[str, float] = {}
        answered = _check_ids(source, spec.file, eval_set, in_scope, read_answers(spec.file, confidences))
        items, report = in_scope, None
    else:
        answered, report = _harness_answers(source, spec, fmt, harness_task, eval_set)
        items, confidences = [it for it in in_scope if it.item_id in answered], {}
    rows = [
        record(item, eval_set.task, answered[item.item_id], CLEAN, confidences.get(item.item_id, math.nan))
        for item in items
    ]
    records = pd.DataFrame(rows, columns=RECORD_COLUMNS)
    tasks = {eval_set.items[0].task: eval_set.task} if eval_set.items else {}
    metrics = summarize(records, tasks)
    metrics["scored"] = {"answers": str(spec.file), "format": fmt, "image": image.model_dump(mode="json")}
    if report is not None:
        metrics["scored"]["harness"] = report
    if limited:
        metrics["scored"]["limit"] = source.limit
        metrics["scored"]["answers_passed_over"] = len(answered) - len(items)
    return records, metrics


def _harness_task(source: DataSource, spec: AnswerFile, fmt: str) -> str | None:
    """The lmms-eval task the samples are for; one that answers another benchmark or split is refused (checked
    before the benchmark is loaded)."""
    if fmt != "lmms-eval":
        return spec.harness_task
    harness_task = spec.harness_task or harness_formats.lmms_eval_task(spec.file)
    expected = lmms_eval_expectation(harness_task) if harness_task else None
    fmt_of_task = task_format(TASKS.get(source.task, key="task")())
    if expected is not None and (expected[0] != fmt_of_task or expected[1] != source.split):
        raise DataError(
            f"{spec.file}: lmms-eval task {harness_task} answers {expected[0]}:{expected[1]} questions, "
            f"not {source.task}:{source.split} ({fmt_of_task})"
        )
    return harness_task


def _harness_answers(
    source: DataSource, spec: AnswerFile, fmt: str, harness_task: str | None, eval_set: EvalSet
) -> tuple[dict, dict]:
    """{item id: answer} of a harness's output, and the mapping report (rows, mapped, unmapped with why)."""
    rows = (
        harness_formats.read_lmms_eval(spec.file) if fmt == "lmms-eval" else harness_formats.read_vlmevalkit(spec.file)
    )
    index_map = harness_formats.read_index_map(spec.index_map) if spec.index_map else None
    docs = harness_formats.read_docs(spec.docs) if spec.docs else None
    mapped = map_rows(
        rows, eval_set.items, task_format(eval_set.task), source.split, fmt, harness_task, index_map, docs, source.path
    )
    return mapped.answers, {"harness_task": harness_task, **mapped.report(len(eval_set.items))}


def _check_ids(
    source: DataSource, answers_file: Path, eval_set: EvalSet, in_scope: list, answers: dict[str, str]
) -> dict[str, str]:
    """vlmlab answers name vlmlab's ids: every one must be an item of the split, and every item in scope (the
    first `limit`, or all) answered."""
    every_id = [item.item_id for item in eval_set.items]
    known = set(every_id)
    unknown = [i for i in answers if i not in known]
    if unknown:
        raise DataError(
            f"{answers_file}: {len(unknown)} answers name items that {source.task}:{source.split} does not have "
            f"({_first(unknown)}); ids are vlmlab's, see docs/datasets.md{_id_hint(unknown, every_id)}"
        )
    ids = [item.item_id for item in in_scope]
    missing = [i for i in ids if i not in answers]
    if missing:
        raise DataError(
            f"{answers_file}: no answer for {len(missing)} of {len(ids)} items of {source.task}:"
            f"{source.split} ({_first(missing)}); answer every item, or score fewer with --limit"
        )
    return answers


def _id_hint(unknown: list[str], known: list[str]) -> str:
    """A hint when the unknown ids are bare numbers (an integer `item_id`, or the benchmark's own id) and vlmlab's
    are not: what one of vlmlab's ids for this split looks like."""
    if known and all(i.lstrip("-").isdigit() for i in unknown) and not known[0].lstrip("-").isdigit():
        return (
            f" (item_id {unknown[0]} is a bare number; vlmlab's ids are strings such as {known[0]!r}: write "
            '"item_id" as that string)'
        )
    return ""
