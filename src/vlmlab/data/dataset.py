"""Tokenized VQA datasets and the left-padding collator shared by training and generation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from vlmlab.config import ImageConfig
from vlmlab.data.bad_images import stop_error
from vlmlab.data.eval_mode import CLEAN, EvalMode
from vlmlab.data.images import load_image, normalize, to_array
from vlmlab.data.items import VQAItem
from vlmlab.errors import DataError, UserError
from vlmlab.models.llm.base import LanguageBackbone

IGNORE = -100


class Row(NamedTuple):
    """One tokenized item: ids, labels (empty without answers), the image (None when blind) and its index;
    `bad_image` names the image a `skip` policy replaced (the row then teaches nothing: every label is IGNORE)."""

    ids: list[int]
    labels: list[int]
    image: np.ndarray | None
    index: int
    bad_image: str | None = None


@dataclass
class Batch:
    """A padded batch. Rows are left-padded so every prompt ends at the last column."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    image_mask: torch.Tensor  # (B, T) bool, True at vision-token positions
    pixel_values: torch.Tensor  # (B, 3, H, W)
    labels: torch.Tensor | None  # (B, T) or None for generation
    indices: list[int]  # dataset indices of the rows
    bad_items: list[tuple[str, str]] = field(default_factory=list)  # (item, image) skipped (on_bad_image: skip)

    def to(self, device: torch.device) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(
            move(self.input_ids),
            move(self.attention_mask),
            move(self.image_mask),
            move(self.pixel_values),
            move(self.labels),
            self.indices,
            self.bad_items,
        )

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return dict(
            input_ids=self.input_ids,
            attention_mask=self.attention_mask,
            image_mask=self.image_mask,
            pixel_values=self.pixel_values,
        )


class VQADataset(torch.utils.data.Dataset):
    """Items tokenized once with the backbone's prompt format; the `<image>` placeholder is expanded
    to `num_image_tokens` positions, so the vision span of every row is known before the forward."""

    def __init__(
        self,
        items: Sequence[VQAItem],
        llm: LanguageBackbone,
        image: ImageConfig,
        num_image_tokens: int,
        with_answers: bool,
        mode: EvalMode = CLEAN,
        on_bad_image: str = "stop",
    ):
        self.items = list(items)
        self.on_bad_image = on_bad_image
        self.image_cfg = image
        self.with_answers = with_answers
        self.mode = mode
        self.pad_id = llm.pad_token_id
        self.image_token_id = llm.image_token_id
        self.num_image_tokens = num_image_tokens
        prompt_cache: dict[str, list[int]] = {}
        answer_cache: dict[str, list[int]] = {}
        self.prompts: list[list[int]] = []  # with one <image> placeholder, expanded when a row is made
        self.answers: list[list[int]] = []
        for item in self.items:
            if item.question not in prompt_cache:
                prompt_cache[item.question] = _one_placeholder(llm.encode_prompt(item.question), llm.image_token_id)
            self.prompts.append(prompt_cache[item.question])
            if with_answers:
                if item.answer not in answer_cache:
                    answer_cache[item.answer] = llm.encode_answer(item.answer)
                self.answers.append(answer_cache[item.answer])
        self._images: dict[str, np.ndarray] = {}
        self._cache_images = len({it.image for it in self.items}) <= 50_000

    def __len__(self) -> int:
        return len(self.items)

    def vision_span(self, index: int) -> tuple[int, int]:
        """(start, length) of the vision tokens in item `index`'s unpadded sequence."""
        return self.prompts[index].index(self.image_token_id), self.num_image_tokens

    def length(self, index: int) -> int:
        """Tokens in item `index`'s unpadded sequence (vision tokens and, with answers, the answer included)."""
        answer = len(self.answers[index]) if self.with_answers else 0
        return len(self.prompts[index]) - 1 + self.num_image_tokens + answer

    def _expanded(self, index: int) -> list[int]:
        ids = self.prompts[index]
        at = ids.index(self.image_token_id)
        return ids[:at] + [self.image_token_id] * self.num_image_tokens + ids[at + 1 :]

    def image_array(self, path: str) -> np.ndarray:
        arr = self._images.get(path)
        if arr is None:
            arr = to_array(load_image(path), self.image_cfg.size, self.image_cfg.geometry)
            if self._cache_images:
                self._images[path] = arr
        return arr

    def __getitem__(self, index: int) -> Row:
        prompt = self._expanded(index)
        if self.with_answers:
            answer = self.answers[index]
            ids, labels = prompt + answer, [IGNORE] * len(prompt) + answer
        else:
            ids, labels = prompt, []
        if self.mode.blind:
            return Row(ids, labels, None, index)
        path = self.items[index].image
        try:
            array = self.image_array(path)
        except DataError as exc:
            if not self.with_answers:  # evaluation and probes: every image is needed
                raise
            if self.on_bad_image != "skip":
                raise stop_error(exc) from None
            size = self.image_cfg.size  # a grey stand-in; the row's loss is masked, so it teaches nothing
            return Row(ids, [IGNORE] * len(ids), np.full((size, size, 3), 127, np.uint8), index, path)
        return Row(ids, labels, self.mode.image(array, path), index)

    def collate(self, rows: list[Row]) -> Batch:
        width = max(len(r[0]) for r in rows)
        n = len(rows)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        labels = torch.full((n, width), IGNORE, dtype=torch.long) if self.with_answers else None
        for i, (ids, lab, *_) in enumerate(rows):
            start = width - len(ids)
            input_ids[i, start:] = torch.tensor(ids)
            attention[i, start:] = 1
            if labels is not None:
                labels[i, start:] = torch.tensor(lab)
        size = self.image_cfg.size
        if self.mode.blind:  # a constant image: the per-channel mean, i.e. zeros after normalization
            pixels = torch.zeros((n, 3, size, size))
        else:
            stacked = np.stack([r[2] for r in rows])
            pixels = torch.from_numpy(normalize(stacked, self.image_cfg.mean, self.image_cfg.std))
        image_mask = (input_ids == self.image_token_id) & attention.bool()
        bad = [(self.item_key(r.index), r.bad_image) for r in rows if r.bad_image is not None]
        return Batch(input_ids, attention, image_mask, pixels, labels, [r.index for r in rows], bad)

    def item_key(self, index: int) -> str:
        """`task/item_id`: how the bad-image record names an item."""
        item = self.items[index]
        return f"{item.task}/{item.item_id}"


def _one_placeholder(ids: list[int], image_id: int) -> list[int]:
    if ids.count(image_id) != 1:
        raise UserError(f"the prompt format must contain exactly one <image> placeholder (found {ids.count(image_id)})")
    return ids
