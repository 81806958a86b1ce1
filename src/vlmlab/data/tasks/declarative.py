"""Declarative tasks: a small YAML names a format (a registered loader), a prompt, a metric and the
categories to keep, so adding a benchmark in a supported format needs no Python (like lmms-eval)."""

from __future__ import annotations

import os
import string
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from vlmlab.data.items import VQAItem
from vlmlab.data.tasks.base import Task
from vlmlab.errors import ConfigError, UserError, validation_error
from vlmlab.io import read_yaml_file
from vlmlab.metrics import METRICS
from vlmlab.registry import TASKS

TASK_DIRS_ENV = "VLMLAB_TASK_DIRS"  # extra directories of task YAMLs, separated by os.pathsep


class TaskSpec(BaseModel):
    """One task YAML. `prompt` is a template over the record's question: `{question}`."""

    model_config = ConfigDict(extra="forbid")
    task: str
    format: str
    description: str = ""
    path: str | None = None  # default data location; a config's `data.*.path` overrides it
    prompt: str = "{question}"
    answer_type: Literal["short", "yes-no", "choice", "box"] = "short"
    metric: str = "exact_match"
    categories: list[str] | None = None  # keep only these (None = all)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r} (known: {', '.join(METRICS)})")
        return value

    @field_validator("prompt")
    @classmethod
    def _uses_question(cls, value: str) -> str:
        try:
            fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(value) if name is not None]
        except ValueError as exc:
            raise ValueError(f"not a prompt template ({exc}); write a literal brace as {{{{ or }}}}") from None
        if any(field != ("question", "", None) for field in fields):  # no attribute, index or format spec
            raise ValueError("the prompt template may hold only {question} (write a literal brace as {{ or }})")
        if not fields:
            raise ValueError("the prompt template must contain {question}")
        return value


class DeclarativeTask(Task):
    """A task built from a TaskSpec on top of a format's loader."""

    spec: TaskSpec

    def __init__(self):
        super().__init__()
        self.format: Task = TASKS.get(self.spec.format, key="format")()
        self.answer_type = self.spec.answer_type
        self.metric = self.spec.metric
        self.splits = self.format.splits
        self.notes = self.format.notes  # what the format's loader skipped, for metrics.json
        self.overlong_prompts = self.format.overlong_prompts
        self.image_position_from_data = self.format.image_position_from_data  # llava-json's records place the image

    def load(self, split: str, limit: int | None = None, path: str | None = None) -> list[VQAItem]:
        items = self.format.load(split, None, path or self.spec.path)
        keep = self.spec.categories
        out = []
        for item in items:
            if keep is not None and item.category not in keep:
                continue
            out.append(replace(item, task=self.spec.task, question=self.spec.prompt.format(question=item.question)))
            if limit is not None and len(out) >= limit:
                break
        return out

    def image_labels(self, items: list[VQAItem]) -> dict[str, dict[str, str]]:
        return self.format.image_labels(items)

    def image_objects(self, items: list[VQAItem]) -> dict[str, dict]:
        return self.format.image_objects(items)

    def score(self, prediction: str, item: VQAItem) -> float:
        return METRICS[self.spec.metric](prediction, item)

    def summary(self, predictions: list[str], answers: list[str]) -> dict[str, float]:
        return self.format.summary(predictions, answers)

    def llava_key(self, record: dict) -> str | None:
        return self.format.llava_key(record)


def task_files() -> list[Path]:
    """Built-in task YAMLs, then those in the directories named by $VLMLAB_TASK_DIRS."""
    builtin = Path(str(resources.files("vlmlab") / "tasks"))
    dirs = [builtin] + [Path(d) for d in os.environ.get(TASK_DIRS_ENV, "").split(os.pathsep) if d]
    files = []
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"{d}: task directory not found (${TASK_DIRS_ENV})")
        files.extend(sorted(d.glob("*.yaml")))
    return files


def read_spec(file: Path) -> TaskSpec:
    try:
        raw = read_yaml_file(file, "task file")
        return TaskSpec(**(raw or {}))
    except ValidationError as exc:
        raise validation_error(exc, context=(str(file),)) from None
    except TypeError:
        raise UserError(f"{file}: a task file must be a YAML mapping", exit_code=2) from None


def register_declarative_tasks() -> None:
    """Register every task YAML as a task id (after the Python formats are registered)."""
    for file in task_files():
        spec = read_spec(file)
        if spec.format not in TASKS.ids():
            raise ConfigError(
                "format", f"unknown format {spec.format!r} (known: {', '.join(TASKS.ids())})", (str(file),)
            )
        if spec.task in TASKS.ids():
            raise ConfigError("task", f"task id {spec.task!r} is already registered", (str(file),))
        cls = type(spec.task, (DeclarativeTask,), {"spec": spec, "__doc__": spec.description or f"{spec.format} task"})
        TASKS.register(spec.task)(cls)
