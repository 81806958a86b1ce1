"""What a plan needs of each training stage's data: items, the text-only share, mean and longest sequences.

Present data is read and counted; token lengths come from the backbone's own tokenizer through the same
`VQADataset` the trainer uses (the mean over a seeded sample of `SAMPLE` rows, the longest rows as the
memory pre-flight finds them). Without the tokenizer, lengths are estimated at `CHARS_PER_TOKEN` characters
per token plus `TEMPLATE_TOKENS` of chat template. Absent data is taken from `vlmlab.plan.known` by file name.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from vlmlab.config import DataSource, RunConfig
from vlmlab.data.dataset import IGNORE, VQADataset
from vlmlab.data.items import VQAItem
from vlmlab.data.sources import load_source
from vlmlab.errors import ConfigError
from vlmlab.models.footprint import Extent
from vlmlab.plan.known import KNOWN_DATASETS, KNOWN_EVAL_SIZES

SAMPLE = 512  # rows tokenized for the mean length
CHARS_PER_TOKEN = 4.0  # English under a LLaMA-style tokenizer, when the tokenizer itself is absent
TEMPLATE_TOKENS = 35  # system prompt and roles of a vicuna-style template, likewise


@dataclass
class StageData:
    """One training stage's data as the plan sees it."""

    items: int
    text_only: float  # share of items without an image
    mean_text_tokens: float  # per item, vision tokens excluded
    mean_answer_tokens: float  # supervised tokens per item
    extent: Extent  # the longest rows, for the memory pre-flight
    how: str  # "counted", "counted, lengths estimated" or "assumed: ..."
    notes: list[str] = field(default_factory=list)


def source_present(source: DataSource) -> bool:
    return source.path is None or Path(source.path).exists()


def stage_data(cfg: RunConfig, sources: list[DataSource], key: str, llm, vision_tokens: int, real_tokenizer: bool):
    """The statistics of the mixture `sources` (config path `key`) for the model `llm` with `vision_tokens`."""
    parts: list[tuple[StageData, int]] = []
    for i, source in enumerate(sources):
        where = key if len(sources) == 1 else f"{key}.{i}"
        if source_present(source):
            _, items = load_source(source, where, cfg.data.image)
            parts.append((measure(items, cfg, llm, vision_tokens, real_tokenizer), source.repeat))
        else:
            parts.append((_known(source, where, cfg, vision_tokens), source.repeat))
    return _mix(parts)


def measure(items: list[VQAItem], cfg: RunConfig, llm, vision_tokens: int, real_tokenizer: bool) -> StageData:
    """Count `items` and their lengths (tokenized by `llm` when its tokenizer is real, else estimated)."""
    if not items:
        raise ConfigError("data.train", "a training source has no items")
    text_only = sum(it.image is None for it in items) / len(items)
    sample = random.Random(0).sample(range(len(items)), min(SAMPLE, len(items)))
    if real_tokenizer:
        data = VQADataset(items, llm, cfg.data.image, vision_tokens, with_answers=True, max_length=cfg.train.max_length)
        rows = [data.tokens(i) for i in sample]
        vision = [vision_tokens if items[i].image is not None else 0 for i in sample]
        text = [len(ids) - v for (ids, _, _), v in zip(rows, vision)]
        answers = [sum(label != IGNORE for label in labels) for _, labels, _ in rows]
        return StageData(
            len(items), text_only, _mean(text), _mean(answers), data.extent(), "counted, tokenized", notes=[]
        )
    text = [_estimate(items[i].turns) for i in sample]
    answers = [sum(len(a) for _, a in items[i].turns) / CHARS_PER_TOKEN + len(items[i].turns) for i in sample]
    longest = max(_estimate(it.turns) for it in items)
    extent = _extent(cfg, longest, max(answers), vision_tokens, items)
    return StageData(len(items), text_only, _mean(text), _mean(answers), extent, "counted, lengths estimated")


def _known(source: DataSource, key: str, cfg: RunConfig, vision_tokens: int) -> StageData:
    name = Path(source.path).name
    known = KNOWN_DATASETS.get(name)
    if known is None:
        raise ConfigError(f"{key}.path", f"{source.path} is not on this machine and no known dataset is named {name!r}")
    items = min(known.items, source.limit) if source.limit else known.items
    longest = vision_tokens + (known.max_text_tokens or 1 << 20)
    if cfg.train.max_length:
        longest = min(longest, cfg.train.max_length)
    elif known.max_text_tokens is None:
        raise ConfigError("train.max_length", f"{name} holds records of any length: set train.max_length to plan it")
    extent = Extent(
        tokens=longest,
        answer_tokens=min(longest, int(4 * known.mean_answer_tokens)),
        prompt_tokens=vision_tokens + TEMPLATE_TOKENS + 64,
        images=0,
        image_bytes=0,
    )
    text = f"assumed: {name} ({known.source})"
    note = f"{key}: {source.path} not here; {known.items:,} records, {known.mean_text_tokens:.0f} text tokens each"
    return StageData(items, known.text_only, known.mean_text_tokens, known.mean_answer_tokens, extent, text, [note])


def _estimate(turns) -> float:
    return TEMPLATE_TOKENS + sum(len(q) + len(a) for q, a in turns) / CHARS_PER_TOKEN + 2 * len(turns)


def _extent(cfg: RunConfig, longest_text: float, answers: float, vision_tokens: int, items) -> Extent:
    tokens = int(longest_text) + vision_tokens
    if cfg.train.max_length:
        tokens = min(tokens, cfg.train.max_length)
    images = len({it.image for it in items if it.image is not None})
    return Extent(
        tokens, int(answers), vision_tokens + TEMPLATE_TOKENS + 64, images, images * 3 * cfg.data.image.size**2
    )


def _mix(parts: list[tuple[StageData, int]]) -> StageData:
    """Several sources trained on as one mixture (`repeat` weights a source's items)."""
    n = sum(d.items * r for d, r in parts)
    w = [(d, d.items * r / n) for d, r in parts]
    extent = Extent(
        tokens=max(d.extent.tokens for d, _ in parts),
        answer_tokens=max(d.extent.answer_tokens for d, _ in parts),
        prompt_tokens=max(d.extent.prompt_tokens for d, _ in parts),
        images=sum(d.extent.images for d, _ in parts),
        image_bytes=sum(d.extent.image_bytes for d, _ in parts),
    )
    hows = sorted({d.how for d, _ in parts})
    return StageData(
        n,
        sum(d.text_only * x for d, x in w),
        sum(d.mean_text_tokens * x for d, x in w),
        sum(d.mean_answer_tokens * x for d, x in w),
        extent,
        "; ".join(hows),
        [note for d, _ in parts for note in d.notes],
    )


def eval_items(cfg: RunConfig) -> tuple[dict[str, int], list[str]]:
    """Questions per evaluation task (one mode): counted where present, else the split's published size."""
    per_task: dict[str, int] = {}
    notes = []
    for i, source in enumerate(cfg.data.eval):
        if source_present(source):
            task, items = load_source(source, f"data.eval.{i}", cfg.data.image)
            for item in items:
                per_task[item.task] = per_task.get(item.task, 0) + 1
            continue
        size = KNOWN_EVAL_SIZES.get((source.task, source.split))
        if size is None:
            notes.append(f"data.eval.{i}: {source.path} not here and its size is unknown; its cost is left out")
            continue
        per_task[source.task] = per_task.get(source.task, 0) + (min(size, source.limit) if source.limit else size)
    return per_task, notes


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
