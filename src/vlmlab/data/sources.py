"""Resolve a config's data source (`{task, split, limit, path}`) into a task and its items."""

from __future__ import annotations

from vlmlab.config import DataSource
from vlmlab.data.items import VQAItem
from vlmlab.data.tasks.base import Task
from vlmlab.errors import ConfigError
from vlmlab.registry import TASKS


def load_source(source: DataSource, key: str) -> tuple[Task, list[VQAItem]]:
    """`key` is the source's config path (e.g. `data.eval.0`); a loader's ConfigError is re-rooted there."""
    task: Task = TASKS.get(source.task, key=f"{key}.task")()
    try:
        return task, task.load(source.split, source.limit, source.path)
    except ConfigError as exc:
        raise ConfigError(f"{key}.{exc.key}", str(exc).split(": ", 1)[1]) from None
