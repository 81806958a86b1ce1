"""Readers for other harnesses' per-item outputs, each bounded in size and depth: lmms-eval's `--log_samples`
JSON lines, VLMEvalKit's prediction tables (xlsx, tsv, csv, json), and the files that say which benchmark row a
harness row is (lmms-eval's dataset rows, an index map). They return rows as the file states them; which vlmlab
item a row answers is `harness_mapping`'s business.

lmms-eval (EvolvingLMMs-Lab/lmms-eval, `loggers/evaluation_tracker.py`): one JSON object a line with `doc_id` (the
row's index in the task's evaluation split), `target` (the gold answer as text), `input` (the prompt),
`filtered_resps` (the answer after the task's filters: one string, or a one-element list of them before v0.4),
`doc` (the dataset row without its image; dropped from v0.4 on) and the task's per-item metric values, some of
which carry the benchmark's ids (POPE's `pope_accuracy.question_id`, TextVQA's `submission.question_id`, RefCOCO's
`refcoco_*.ann_id`). VLMEvalKit (open-compass/VLMEvalKit, `inference.py`, `smp/file.py`): the benchmark's TSV
without its image column plus `prediction`, written as `{model}_{dataset}.xlsx` (default), `.tsv` (tab,
every field quoted) or `.json` (a list of records); `index` keys the row.
"""

from __future__ import annotations

import csv
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmlab import bounded
from vlmlab.errors import DataError, UserError

MAX_FILE_BYTES = 4 << 30  # a whole VQAv2 val log (214k rows) is ~0.3 GB
MAX_LINE_BYTES = 8 << 20  # one row
MAX_ROWS = 5_000_000
MAX_DEPTH = 64  # nesting of one JSON value
MAX_XLSX_UNPACKED = 2 << 30  # the sum of an xlsx archive's uncompressed members (a zip bomb stops here)
FORMATS = ("vlmlab", "lmms-eval", "vlmevalkit")
_SAMPLES_NAME = re.compile(r"samples_(.+?)\.jsonl$")


@dataclass
class HarnessRow:
    """One row of a harness's output: its key, what it answered, and what it says about its question."""

    key: str  # e.g. `doc_id 12`, `index 7`: how messages name it
    value: str  # the key's value (`12`, `7`): what an index map keys on
    prediction: str | None  # the one text answer (None: `problem` says why it cannot be read)
    problem: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # ids and columns: doc fields, metric payloads, columns
    target: str | None = None  # the harness's gold answer, as text
    question: str | None = None  # the harness's question or prompt


def _check_size(file: Path, what: str) -> None:
    if not file.is_file():
        raise DataError(f"{file}: {what} not found")
    if file.stat().st_size > MAX_FILE_BYTES:
        raise DataError(f"{file}: larger than {MAX_FILE_BYTES >> 30} GiB; split it")


def parse_json(text: str, where: str) -> Any:
    """One JSON value, no deeper than MAX_DEPTH (`vlmlab.bounded`); anything else is a DataError naming `where`."""
    try:
        return bounded.json_data(text, where, max_depth=MAX_DEPTH)
    except UserError as exc:
        raise DataError(str(exc)) from None


def json_lines(file: Path, what: str):
    """(where, value) per non-blank line of a JSON-lines file, bounded in file size, line length and rows."""
    _check_size(file, what)
    with open(file, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno > MAX_ROWS:
                raise DataError(f"{file}: more than {MAX_ROWS:,} lines")
            if len(raw) > MAX_LINE_BYTES:
                raise DataError(f"{file}:{lineno}: line longer than {MAX_LINE_BYTES >> 20} MiB")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{file}:{lineno}: not UTF-8 text") from None
            if line.strip():
                yield f"{file}:{lineno}", parse_json(line, f"{file}:{lineno}")


def lmms_eval_task(file: Path) -> str | None:
    """The lmms-eval task a samples file is for, from its name (`{date}_samples_{task}.jsonl`)."""
    match = _SAMPLES_NAME.search(file.name)
    return match.group(1) if match else None


def _one_answer(value: Any) -> tuple[str | None, str | None]:
    """(answer, problem): unwrap one-element lists (lmms-eval before v0.4 keeps one list per request)."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str):
        return value, None
    if isinstance(value, list):
        return None, f"{len(value)} responses (repeats or several requests), not one answer"
    return None, "no text response in filtered_resps"


def read_lmms_eval(file: Path) -> list[HarnessRow]:
    """The rows of an lmms-eval `--log_samples` file (any version from v0.2 on)."""
    rows = []
    for where, rec in json_lines(file, "lmms-eval samples file"):
        if not isinstance(rec, dict) or "doc_id" not in rec:
            raise DataError(f"{where}: not an lmms-eval sample (expected an object with doc_id, filtered_resps)")
        doc_id = rec["doc_id"]
        if isinstance(doc_id, bool) or not isinstance(doc_id, (int, str)):
            raise DataError(f"{where}: doc_id must be an integer")
        answer, problem = _one_answer(rec.get("filtered_resps", rec.get("resps")))
        doc = rec.get("doc") if isinstance(rec.get("doc"), dict) else {}
        payload: dict[str, Any] = {}
        for key, value in rec.items():  # per-item metric values that carry ids, e.g. pope_accuracy, submission
            if key != "doc" and isinstance(value, dict):
                for k, v in value.items():
                    payload.setdefault(k, v)
        question = rec.get("input") if isinstance(rec.get("input"), str) else doc.get("question")
        target = rec.get("target")
        rows.append(
            HarnessRow(
                key=f"doc_id {doc_id}",
                value=str(doc_id),
                prediction=answer,
                problem=problem,
                fields={**payload, **{k: v for k, v in doc.items() if not isinstance(v, (dict, list))}},
                target=None if target is None else str(target),
                question=question if isinstance(question, str) else None,
            )
        )
    return rows


def _cell(value: Any) -> Any:
    """A table cell as the benchmark meant it: floats that are whole numbers as ints (xlsx stores 7 as 7.0)."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return int(value)
    return value


def _text(value: Any) -> str:
    value = _cell(value)
    return "" if value is None else str(value)


def read_table(file: Path) -> list[dict[str, Any]]:
    """A VLMEvalKit table as a list of {column: cell}: xlsx (first sheet), tsv / csv, or json (list of records)."""
    _check_size(file, "VLMEvalKit prediction file")
    suffix = file.suffix.lower()
    if suffix == ".xlsx":
        return _read_xlsx(file)
    if suffix in (".tsv", ".csv"):
        csv.field_size_limit(MAX_LINE_BYTES)
        try:
            with open(file, encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
                rows = []
                for i, row in enumerate(reader):
                    if i >= MAX_ROWS:
                        raise DataError(f"{file}: more than {MAX_ROWS:,} rows")
                    rows.append(dict(row))
                return rows
        except UnicodeDecodeError:
            raise DataError(f"{file}: not UTF-8 text") from None
        except csv.Error as exc:
            raise DataError(f"{file}: not a readable {suffix[1:]} table ({exc})") from None
    if suffix == ".json":
        data = parse_json(file.read_text(encoding="utf-8"), str(file))
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DataError(f"{file}: expected a JSON list of records (VLMEvalKit's PRED_FORMAT=json)")
        return data
    raise DataError(f"{file}: a VLMEvalKit prediction file is .xlsx, .tsv, .csv or .json")


def _read_xlsx(file: Path) -> list[dict[str, Any]]:
    try:
        with zipfile.ZipFile(file) as archive:
            members = archive.infolist()
            if len(members) > 10_000 or sum(m.file_size for m in members) > MAX_XLSX_UNPACKED:
                raise DataError(f"{file}: unpacks to more than {MAX_XLSX_UNPACKED >> 30} GiB")
    except zipfile.BadZipFile:
        raise DataError(f"{file}: not an xlsx file (not a zip archive)") from None
    from openpyxl import load_workbook  # parses XML through defusedxml (installed with vlmlab)

    try:
        book = load_workbook(file, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds on a damaged file
        raise DataError(f"{file}: not a readable xlsx file ({type(exc).__name__})") from None
    try:
        rows = book.worksheets[0].iter_rows(values_only=True)
        header = [_text(c) for c in next(rows, ())]
        out = []
        for i, row in enumerate(rows):
            if i >= MAX_ROWS:
                raise DataError(f"{file}: more than {MAX_ROWS:,} rows")
            if any(c is not None for c in row):
                out.append({h: c for h, c in zip(header, row) if h})
        return out
    finally:
        book.close()


def read_vlmevalkit(file: Path) -> list[HarnessRow]:
    """The rows of a VLMEvalKit prediction table; `index` and `prediction` are required."""
    table = read_table(file)
    if table and not {"index", "prediction"} <= set(table[0]):
        raise DataError(
            f"{file}: not a VLMEvalKit prediction table (needs the columns index and prediction; "
            f"has {', '.join(map(str, table[0]))})"
        )
    rows, known = [], {"index", "prediction", "question", "answer"}
    for record in table:
        index = _text(record.get("index"))
        question, answer = _text(record.get("question")), record.get("answer")
        rows.append(
            HarnessRow(
                key=f"index {index}",
                value=index,
                prediction=_text(record.get("prediction")),  # VLMEvalKit writes str(answer); an empty cell is ""
                fields={k: _cell(v) for k, v in record.items() if k not in known and _cell(v) is not None},
                target=None if _cell(answer) is None else _text(answer),
                question=question or None,
            )
        )
    return rows


def read_index_map(file: Path) -> dict[str, str]:
    """{harness key value: vlmlab item id} from a two-column CSV/TSV with a header (e.g. `index,item_id`)."""
    _check_size(file, "index map")
    delimiter = "\t" if file.suffix.lower() == ".tsv" else ","
    csv.field_size_limit(MAX_LINE_BYTES)
    out: dict[str, str] = {}
    with open(file, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header = next(reader, None)
        if not header or len(header) != 2:
            raise DataError(f"{file}: an index map has a header and two columns (harness key, vlmlab item_id)")
        for lineno, row in enumerate(reader, start=2):
            if len(row) != 2:
                raise DataError(f"{file}:{lineno}: expected two columns")
            if row[0] in out:
                raise DataError(f"{file}:{lineno}: {header[0]} {row[0]!r} mapped twice")
            out[row[0]] = row[1]
    return out


DOC_COLUMNS = ("question_id", "id", "category", "image", "image_id", "image_source", "question", "answer")


def read_docs(path: Path) -> list[dict[str, Any]]:
    """The dataset rows an lmms-eval task evaluated, in order (doc_id = position): parquet files (one, or a
    directory of shards read in name order, as `datasets` orders them) or JSON lines. Only id-like columns are
    read (never the images)."""
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise DataError(f"{path}: no .parquet files (the task's evaluation split, e.g. validation-*.parquet)")
    elif path.suffix.lower() == ".parquet":
        files = [path]
    elif path.suffix.lower() in (".jsonl", ".json"):
        return [rec if isinstance(rec, dict) else {} for _, rec in json_lines(path, "docs file")]
    else:
        raise DataError(f"{path}: docs are .parquet (file or directory of shards) or .jsonl")
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for f in files:
        _check_size(f, "docs file")
        try:
            schema = pq.read_schema(f)
            columns = [c for c in DOC_COLUMNS if c in schema.names and _id_type(schema.field(c).type)]
            rows.extend(pq.read_table(f, columns=columns).to_pylist())
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{f}: not a readable parquet file ({exc})") from None
        if len(rows) > MAX_ROWS:
            raise DataError(f"{path}: more than {MAX_ROWS:,} rows")
    return rows


def _id_type(kind) -> bool:
    """A column type an id can have (text or an integer; never an image struct)."""
    import pyarrow as pa

    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)


def detect_format(file: Path) -> str:
    """`vlmevalkit` for a table, else by the first JSON line: `lmms-eval` (doc_id) or `vlmlab` (item_id)."""
    if file.suffix.lower() in (".xlsx", ".tsv", ".csv"):
        return "vlmevalkit"
    if file.suffix.lower() == ".json":
        return "vlmevalkit"
    for where, rec in json_lines(file, "answers file"):
        if isinstance(rec, dict) and "doc_id" in rec:
            return "lmms-eval"
        if isinstance(rec, dict) and "item_id" in rec:
            return "vlmlab"
        raise DataError(f"{where}: neither vlmlab answers (item_id) nor lmms-eval samples (doc_id); give --from")
    raise DataError(f"{file}: no answers in it")
