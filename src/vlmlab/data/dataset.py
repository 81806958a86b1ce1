"""Tokenized VQA datasets and the left-padding collator shared by training and generation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vlmlab.config import ImageConfig
from vlmlab.data.eval_mode import CLEAN, EvalMode
from vlmlab.data.images import load_image, normalize, to_array
from vlmlab.data.items import VQAItem
from vlmlab.errors import UserError
from vlmlab.models.llm.base import LanguageBackbone

IGNORE = -100


@dataclass
class Batch:
    """A padded batch. Rows are left-padded so every prompt ends at the last column."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    image_mask: torch.Tensor  # (B, T) bool, True at vision-token positions
    pixel_values: torch.Tensor  # (B, 3, H, W)
    labels: torch.Tensor | None  # (B, T) or None for generation
    indices: list[int]  # dataset indices of the rows

    def to(self, device: torch.device) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(
            move(self.input_ids),
            move(self.attention_mask),
            move(self.image_mask),
            move(self.pixel_values),
            move(self.labels),
            self.indices,
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
    ):
        self.items = list(items)
        self.image_cfg = image
        self.with_answers = with_answers
        self.mode = mode
        self.pad_id = llm.pad_token_id
        self.image_token_id = llm.image_token_id
        prompt_cache: dict[str, list[int]] = {}
        answer_cache: dict[str, list[int]] = {}
        self.prompts: list[list[int]] = []
        self.answers: list[list[int]] = []
        for item in self.items:
            if item.question not in prompt_cache:
                prompt_cache[item.question] = _expand_image(
                    llm.encode_prompt(item.question), llm.image_token_id, num_image_tokens
                )
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
        prompt = self.prompts[index]
        start = prompt.index(self.image_token_id)
        return start, prompt.count(self.image_token_id)

    def image_array(self, path: str) -> np.ndarray:
        arr = self._images.get(path)
        if arr is None:
            arr = to_array(load_image(path), self.image_cfg.size, self.image_cfg.geometry)
            if self._cache_images:
                self._images[path] = arr
        return arr

    def __getitem__(self, index: int) -> tuple[list[int], list[int], np.ndarray | None, int]:
        prompt = self.prompts[index]
        if self.with_answers:
            answer = self.answers[index]
            ids, labels = prompt + answer, [IGNORE] * len(prompt) + answer
        else:
            ids, labels = prompt, []
        image = None
        if not self.mode.blind:
            path = self.items[index].image
            image = self.mode.image(self.image_array(path), path)
        return ids, labels, image, index

    def collate(self, rows: list[tuple[list[int], list[int], np.ndarray | None, int]]) -> Batch:
        width = max(len(r[0]) for r in rows)
        n = len(rows)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        labels = torch.full((n, width), IGNORE, dtype=torch.long) if self.with_answers else None
        for i, (ids, lab, _, _) in enumerate(rows):
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
        return Batch(input_ids, attention, image_mask, pixels, labels, [r[3] for r in rows])


def _expand_image(ids: list[int], image_id: int, n_tokens: int) -> list[int]:
    if ids.count(image_id) != 1:
        raise UserError(f"the prompt format must contain exactly one <image> placeholder (found {ids.count(image_id)})")
    at = ids.index(image_id)
    return ids[:at] + [image_id] * n_tokens + ids[at + 1 :]
