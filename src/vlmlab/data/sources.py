"""Resolve a config's data sources (`{task, split, limit, path}`) into tasks and their items."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vlmlab.config import DataSource, ImageConfig, RunConfig
from vlmlab.data.images import format_box, project_box
from vlmlab.data.items import VQAItem
from vlmlab.data.llava_prompts import apply_llava_prompts
from vlmlab.data.tasks.base import Task
from vlmlab.errors import ConfigError
from vlmlab.registry import TASKS


def load_source(source: DataSource, key: str, image: ImageConfig | None = None) -> tuple[Task, list[VQAItem]]:
    """`key` is the source's config path (e.g. `data.eval.0`); a loader's ConfigError is re-rooted there.
    With the run's `image` config, box answers are re-expressed in the processed image (see fit_box_answers), and
    `image.position: after` puts the image after the question in items whose data does not place it."""
    task: Task = TASKS.get(source.task, key=f"{key}.task")()
    try:
        items = task.load(source.split, source.limit, source.path)
    except ConfigError as exc:
        raise exc.under(key) from None
    if source.prompts is not None:
        items = apply_llava_prompts(task, items, Path(source.prompts), key)
    if image is not None:
        items = fit_box_answers(items, image)
        if image.position == "after" and not task.image_position_from_data:
            items = [replace(it, image_at_end=True) if it.image is not None else it for it in items]
    return task, items


def fit_box_answers(items: list[VQAItem], image: ImageConfig) -> list[VQAItem]:
    """Items that carry a `box` (original pixels) get `answer` = that box after the same resize or
    letterbox the image gets, as `[x1, y1, x2, y2]` in 0-99; other items are returned as they are."""
    out = []
    for item in items:
        if item.box is not None and item.image_size is not None:
            width, height = item.image_size
            box = project_box(item.box, width, height, image.size, image.geometry)
            item = replace(item, answer=format_box(box), frame=(image.size, image.geometry))
        out.append(item)
    return out


def load_training_sources(cfg: RunConfig) -> list[tuple[Task, list[VQAItem]]]:
    """Every `data.train` source of a run, in config order (their items are trained on as one mixture)."""
    return [load_source(src, f"data.train.{i}", cfg.data.image) for i, src in enumerate(cfg.data.train)]


def load_training_items(cfg: RunConfig) -> list[VQAItem]:
    """The `data.train` mixture as trained on: its sources' items, each source `repeat` times."""
    return training_items(load_training_sources(cfg), cfg.data.train)


def stage_data_key(cfg: RunConfig, s: int) -> str:
    """Which data sequence stage `s` trains on: `data.train`, or its own `train.stages.<s>.data`."""
    return "data.train" if cfg.train.stages[s].data is None else f"train.stages.{s}.data"


def load_stage_items(cfg: RunConfig, s: int) -> list[VQAItem]:
    """The items sequence stage `s` trains on (its own `data`, else `data.train`)."""
    stage = cfg.train.stages[s]
    if stage.data is None:
        return load_training_items(cfg)
    single = not isinstance(stage.data, list)
    keys = [f"train.stages.{s}.data" + ("" if single else f".{i}") for i in range(len(stage.sources))]
    loaded = [load_source(src, key, cfg.data.image) for src, key in zip(stage.sources, keys)]
    return training_items(loaded, stage.sources)


def training_items(sources: list[tuple[Task, list[VQAItem]]], specs: list[DataSource]) -> list[VQAItem]:
    """The mixture trained on: every source's items in config order, each source `repeat` times (its weight)."""
    return [item for (_, items), spec in zip(sources, specs, strict=True) for _ in range(spec.repeat) for item in items]
