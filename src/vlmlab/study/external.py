"""External variants of a study: answers that come from files (a released model evaluated with lmms-eval,
VLMEvalKit or LLaVA's scripts, an older run) scored through `vlmlab score`'s path into
`external/<name>/predictions.parquet`, so their records have a trained variant's columns and sit in
results.parquet beside them. One set of answers is paired with every seed of the study."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vlmlab import io
from vlmlab.config import DataSource, ImageConfig
from vlmlab.errors import ConfigError, DataError
from vlmlab.evaluation import harness_formats
from vlmlab.evaluation.records import RECORD_COLUMNS, summarize
from vlmlab.evaluation.score import AnswerFile, score_records
from vlmlab.progress import console
from vlmlab.registry import TASKS
from vlmlab.runs import RunDir
from vlmlab.study.layout import StudyDir
from vlmlab.study.spec import ExternalAnswers, StudySpec, Variant, external_levels

VERSION = 1  # bump when scoring changes what it writes for the same files
NOT_VERIFIED = (
    "its recipe, training data, data order, parts and environment (its answers come from files: the control "
    "check sees none of how it was made)"
)


@dataclass
class ExternalRun:
    """One external variant resolved against the study: the files it is scored from, and where it is written."""

    name: str
    levels: dict[str, str]
    about: str
    answers: list[tuple[DataSource, AnswerFile]] = field(default_factory=list)
    predictions: Path | None = None  # a run / score directory whose predictions.parquet is taken as is
    image: ImageConfig = field(default_factory=ImageConfig)

    def files(self) -> list[Path]:
        return [a.file for _, a in self.answers] + (
            [RunDir(self.predictions).predictions()] if self.predictions else []
        )

    def inputs(self) -> str:
        """Hash of everything its records depend on: the files' contents, the tasks, how the files are read."""
        sources = [
            {
                "source": s.model_dump(mode="json"),
                "format": a.fmt,
                "harness_task": a.harness_task,
                **{
                    k: io.file_sha256(p) for k, p in (("index_map", a.index_map), ("docs", a.docs)) if p and p.is_file()
                },
            }
            for s, a in self.answers
        ]
        files = {str(p): io.file_sha256(p) for p in self.files()}
        return io.content_hash(
            {"files": files, "sources": sources, "image": self.image.model_dump(mode="json"), "version": VERSION}
        )


def study_tasks(spec: StudySpec, variants: list[Variant]) -> list[DataSource]:
    """The evaluation tasks of the study: the spec's, else the base config's (as its first variant resolves it)."""
    if spec.eval.tasks is not None:
        return list(spec.eval.tasks)
    return list(variants[0].cfg.data.eval) if variants else []


def resolve_externals(spec: StudySpec, spec_dir: Path, variants: list[Variant]) -> list[ExternalRun]:
    """Every external variant with its files checked and each answers key matched to one of the study's tasks;
    a mistake is one line naming the key. An external variant may not stand at a trained variant's levels."""
    tasks = study_tasks(spec, variants)
    image = variants[0].cfg.data.image if variants else ImageConfig()
    trained = {tuple(sorted(v.levels.items())): v.name for v in variants}
    seen: dict[tuple, str] = {}
    out = []
    for name, ext in spec.external.items():
        where = f"external.{name}"
        levels = external_levels(spec, name)
        combo = tuple(sorted(levels.items()))
        if name in {v.name for v in variants}:
            raise ConfigError(where, f"a trained variant is named {name!r} too")
        clash = trained.get(combo) or seen.get(combo)
        if clash:
            raise ConfigError(f"{where}.levels", f"stands at the same levels as {clash} ({_levels(levels)})")
        seen[combo] = name
        run = ExternalRun(name, levels, ext.about, image=ext.image or image)
        for key, entry in ext.answers.items():
            entry = entry if isinstance(entry, ExternalAnswers) else ExternalAnswers(file=entry)
            source = _task_of(key, tasks, f"{where}.answers.{key}")
            file = _file(spec_dir, entry.file, f"{where}.answers.{key}")
            fmt = entry.format or ext.format
            fmt = harness_formats.detect_format(file) if fmt == "auto" else fmt  # named as what it is
            answer = AnswerFile(
                file,
                fmt,
                entry.harness_task,
                _file(spec_dir, entry.index_map, f"{where}.answers.{key}.index_map") if entry.index_map else None,
                _file(spec_dir, entry.docs, f"{where}.answers.{key}.docs", folder=True) if entry.docs else None,
            )
            run.answers.append((source, answer))
        if ext.predictions:
            run.predictions = _file(spec_dir, ext.predictions, f"{where}.predictions", folder=True)
            if not RunDir(run.predictions).predictions().is_file():
                raise ConfigError(f"{where}.predictions", f"{run.predictions}: no predictions.parquet in it")
        out.append(run)
    return out


def _levels(levels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in levels.items())


def _task_of(key: str, tasks: list[DataSource], where: str) -> DataSource:
    task, _, split = key.partition(":")
    found = [t for t in tasks if t.task == task and (not split or t.split == split)]
    if len(found) != 1:
        known = ", ".join(f"{t.task}:{t.split}" for t in tasks) or "none"
        why = "names no task the study evaluates" if not found else "matches several tasks; add the split (task:split)"
        raise ConfigError(where, f"{why} (the study's tasks: {known})")
    return found[0]


def _file(spec_dir: Path, name: str, where: str, folder: bool = False) -> Path:
    path = Path(name).expanduser()
    path = path if path.is_absolute() else spec_dir / path
    if not (path.exists() if folder else path.is_file()):
        raise ConfigError(where, f"{path}: not found")
    return path


def control_record(externals: list[ExternalRun]) -> dict[str, Any]:
    """What the control check can and cannot say about each external variant (stored in control.json)."""
    return {
        e.name: {
            "levels": e.levels,
            "about": e.about,
            "files": {str(p): io.file_sha256(p) for p in e.files()},
            "formats": sorted({a.fmt for _, a in e.answers} | ({"vlmlab predictions"} if e.predictions else set())),
            "not_verified": NOT_VERIFIED,
        }
        for e in externals
    }


def external_dir(study_path: Path, name: str) -> RunDir:
    return StudyDir(study_path).external(name)


def is_scored(study_path: Path, ext: ExternalRun) -> bool:
    run = external_dir(study_path, ext.name)
    if not (run.done.is_file() and run.predictions().is_file()):
        return False
    try:
        return io.read_json(run.done).get("inputs") == ext.inputs()
    except (ValueError, AttributeError):
        return False


def score_external(study_path: Path, ext: ExternalRun, tasks: list[DataSource]) -> pd.DataFrame:
    """Score the external variant's files (each a named step), write its records and metrics, mark it done."""
    run = external_dir(study_path, ext.name)
    frames, scored = [], []
    for source, answer in ext.answers:
        console.print(
            f"external {ext.name}: scoring {source.task}:{source.split} from {answer.file} ({answer.fmt})",
            highlight=False,
            soft_wrap=True,
        )
        records, metrics = score_records(source, answer, ext.image)
        frames.append(records)
        scored.append({"task": f"{source.task}:{source.split}", **metrics["scored"]})
        report = metrics["scored"].get("harness")
        if report and report["unmapped"]:
            console.print(
                f"external {ext.name}: {report['unmapped']} of {report['rows']} rows not mapped "
                f"({'; '.join(report['unmapped_first'])})",
                highlight=False,
                soft_wrap=True,
            )
    if ext.predictions is not None:
        frames.append(_taken(RunDir(ext.predictions).predictions(), tasks))
        scored.append({"predictions": str(ext.predictions)})
    records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RECORD_COLUMNS)
    known = {t: TASKS.get(t)() for t in records["task"].unique() if t in TASKS.ids()}
    metrics = {**summarize(records, known), "scored": scored}
    io.write_parquet(run.predictions(), records)
    io.write_json(run.metrics(), metrics)
    io.write_json(run.done, {"inputs": ext.inputs(), "variant": ext.name, "levels": ext.levels, "external": True})
    return records


def _taken(file: Path, tasks: list[DataSource]) -> pd.DataFrame:
    """A run's (or `vlmlab score`'s) clean records as they are, limited to the study's tasks when it names any."""
    frame = pd.read_parquet(file)
    missing = [c for c in RECORD_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{file}: not vlmlab records (no {', '.join(missing)} column)")
    frame = frame[RECORD_COLUMNS]
    if tasks:
        frame = frame[frame["task"].isin({t.task for t in tasks})]
    if frame.empty:
        raise DataError(f"{file}: no records of the study's tasks ({', '.join(t.task for t in tasks)})")
    return frame.reset_index(drop=True)


def external_records(study_path: Path, ext_name: str, levels: dict[str, str], seeds: list[int]) -> pd.DataFrame:
    """Its records as results.parquet holds them: once per seed of the study (one set of answers pairs with every
    seed's), clean mode, with variant and factor columns."""
    records = pd.read_parquet(external_dir(study_path, ext_name).predictions())
    frames = []
    for seed in seeds:
        frame = records.copy()
        frame.insert(0, "mode", "clean")
        frame.insert(0, "seed", seed)
        for factor in reversed(list(levels)):
            frame.insert(0, factor, levels[factor])
        frame.insert(0, "variant", ext_name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def has_confidence(frame: pd.DataFrame) -> bool:
    return bool(frame["confidence"].map(lambda c: c is not None and not math.isnan(c)).any())
