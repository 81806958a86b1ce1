"""`vlmlab compare A B [C ...]`: a study of external variants only, written from the command line — each prediction
set (a run directory, a `vlmlab score` output, or an answers file with its task) is a level of one factor,
`model`, and the study's analyses and report run on them as on any study."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from vlmlab.errors import UserError
from vlmlab.evaluation import harness_formats
from vlmlab.evaluation.score import read_answers
from vlmlab.run_layout import RunDir

ANALYSES = ["factor-effects", "overlap", "exclusive-capabilities"]  # + calibration when every set has confidences
_BAD = re.compile(r"[^A-Za-z0-9_.+-]+")


def parse_task(text: str, limit: int | None) -> dict[str, Any]:
    """`TASK[:SPLIT][@PATH]` (as `import-llava --eval`) as a data source; the split defaults to test."""
    spec, _, path = text.partition("@")
    task, _, split = spec.partition(":")
    if not task:
        raise UserError(f"--task {text}: expected TASK[:SPLIT][@PATH]", exit_code=2)
    return {"task": task, "split": split or "test", **({"path": path} if path else {}), "limit": limit}


def _name(text: str) -> str:
    name = _BAD.sub("-", text).strip("-.") or "model"
    return name if name[0].isalnum() else f"m{name}"


def compare_spec(
    sources: list[str],
    tasks: list[str],
    name: str,
    answers_format: str = "auto",
    limit: int | None = None,
    image: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The study spec of a compare. A source is `[NAME=]PATH[#TASK]`: PATH a directory holding predictions.parquet
    (a run, or a `vlmlab score` output), or an answers file scored on TASK (the one --task when there is one);
    the same NAME given twice joins its files (one per task) into one variant."""
    data = [parse_task(t, limit) for t in tasks]
    keys = [f"{t['task']}:{t['split']}" for t in data]
    external: dict[str, dict[str, Any]] = {}
    for text in sources:
        label, sep, rest = text.partition("=")
        path_text, _, task = (rest if sep else text).partition("#")
        path = Path(path_text).expanduser().resolve()
        name_of = _name(label if sep else (path.name if path.is_dir() else path.stem))
        entry = external.setdefault(name_of, {"about": ""})
        if path.is_dir():
            if not RunDir(path).predictions().is_file():
                raise UserError(f"{path}: no predictions.parquet (a run directory or a `vlmlab score` output)")
            if entry.get("answers") or entry.get("predictions"):
                raise UserError(f"{text}: {name_of} already has answers; a directory is a whole variant")
            entry.update(predictions=str(path), about=str(path))
            continue
        if not path.is_file():
            raise UserError(f"{path}: answers file not found")
        if entry.get("predictions"):
            raise UserError(f"{text}: {name_of} is already a directory's predictions")
        key = _task_key(task, keys, text)
        answers = entry.setdefault("answers", {})
        if key in answers:
            raise UserError(f"{text}: {name_of} answers {key} twice")
        answers[key] = {"file": str(path), "format": answers_format}
        entry["about"] = ", ".join(filter(None, [entry["about"], path.name]))
    if len(external) < 2:
        raise UserError(f"compare: give two or more prediction sets (got {len(external)})", exit_code=2)
    spec: dict[str, Any] = {
        "name": _name(name),
        "question": f"Do {', '.join(external)} solve the same questions, or more, or different ones?",
        "external": {
            n: {k: v for k, v in e.items() if v} | ({"image": image} if image else {}) for n, e in external.items()
        },
        "eval": {"tasks": data or None, "blind": False},
        "seeds": [0],
        # calibration needs a confidence with every answer; a set without any would read as calibrated
        "analyses": ANALYSES + (["calibration"] if all(_has_confidence(e) for e in external.values()) else []),
    }
    return spec


def _task_key(task: str, keys: list[str], text: str) -> str:
    if not keys:
        raise UserError(f"{text}: an answers file needs the task it answers (--task TASK[:SPLIT][@PATH])", exit_code=2)
    if not task:
        if len(keys) > 1:
            raise UserError(f"{text}: several --task given; name the one this file answers (FILE#TASK)", exit_code=2)
        return keys[0]
    found = [k for k in keys if k == task or k.split(":")[0] == task]
    if len(found) != 1:
        raise UserError(f"{text}: #{task} is not one of the --task given ({', '.join(keys)})", exit_code=2)
    return found[0]


def _has_confidence(entry: dict[str, Any]) -> bool:
    """Whether any answer of this variant comes with a confidence (vlmlab answers or records can have one)."""
    if entry.get("predictions"):
        frame = pd.read_parquet(RunDir(entry["predictions"]).predictions(), columns=["confidence"])
        return bool(frame["confidence"].notna().any())
    for answer in entry.get("answers", {}).values():
        file = Path(answer["file"])
        fmt = harness_formats.detect_format(file) if answer["format"] == "auto" else answer["format"]
        if fmt == "vlmlab":
            confidences: dict[str, float] = {}
            read_answers(file, confidences)
            if confidences:
                return True
    return False
