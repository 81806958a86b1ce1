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
from vlmlab.data.order import modality_length
from vlmlab.errors import DataError, UserError
from vlmlab.models.footprint import Extent
from vlmlab.models.llm.base import LanguageBackbone
from vlmlab.models.llm.encoding import TextEncoder

IGNORE = -100


class Row(NamedTuple):
    """One tokenized item: ids, labels (empty without answers), the image (None when blind) and its index;
    `bad_image` names the image a `skip` policy replaced (the row then teaches nothing: every label is IGNORE)."""

    ids: list[int]
    labels: list[int]
    image: np.ndarray | None
    index: int
    bad_image: str | None = None
    dropped: str | None = None  # why the row teaches nothing (too long for train.max_length), else None


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
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (item, why) rows too long for train.max_length

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
            self.dropped,
        )

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return dict(
            input_ids=self.input_ids,
            attention_mask=self.attention_mask,
            image_mask=self.image_mask,
            pixel_values=self.pixel_values,
        )


class VQADataset(torch.utils.data.Dataset):
    """Rows of token ids (the `<image>` placeholder expanded to `num_image_tokens` positions, so the vision span
    of every row is known before the forward), labels and the preprocessed image, made on demand.

    Training rows are whole conversations (`VQAItem.turns`) with every assistant turn supervised; a text-only
    item has no vision tokens and no image. Evaluation rows are the first question's prompt. Tokenizing is
    lazy (done in the data loader's workers when there are any): a 665k-record file starts at once and memory
    stays bounded; single-turn prompts are memoized. `max_length` truncates a training row's end, never its
    vision span: a row whose vision span does not fit, or that keeps no supervised token, teaches nothing (its
    labels are all ignored) and is reported in `Batch.dropped`."""

    def __init__(
        self,
        items: Sequence[VQAItem],
        llm: LanguageBackbone,
        image: ImageConfig,
        num_image_tokens: int,
        with_answers: bool,
        mode: EvalMode = CLEAN,
        on_bad_image: str = "stop",
        max_length: int | None = None,
        image_cache_bytes: int = 1 << 30,
    ):
        self.items = list(items)
        self.on_bad_image = on_bad_image
        self.image_cfg = image
        self.with_answers = with_answers
        self.mode = mode
        self.text: TextEncoder = llm.text
        self.pad_id = llm.pad_token_id
        self.image_token_id = llm.image_token_id
        self.num_image_tokens = num_image_tokens
        self.max_length = max_length
        self._prompts: dict[tuple[str, bool, bool], list[int]] = {}  # memoized single-turn prompts (bounded)
        self._images: dict[str, np.ndarray] = {}
        distinct = len({it.image for it in self.items if it.image is not None})
        self._cache_images = distinct * 3 * image.size**2 <= image_cache_bytes  # all of them fit, or none is kept

    def __len__(self) -> int:
        return len(self.items)

    # ----- token ids -------------------------------------------------------------------------------
    def _prompt(self, item: VQAItem) -> list[int]:
        key = (item.question, item.image is not None, item.image_at_end)
        ids = self._prompts.get(key)
        if ids is None:
            ids = _placeholders(self.text.encode_prompt(*key), self.image_token_id, item.image is not None)
            if len(self._prompts) < PROMPT_MEMO:
                self._prompts[key] = ids
        return ids

    def _unexpanded(self, index: int) -> tuple[list[int], list[int]]:
        """(ids, labels) with at most one image placeholder; labels empty without answers."""
        item = self.items[index]
        if not self.with_answers:
            return self._prompt(item), []
        if not item.conversation:  # one turn: the evaluation prompt plus the supervised answer
            prompt, answer = self._prompt(item), self.text.encode_answer(item.answer)
            return prompt + answer, [IGNORE] * len(prompt) + answer
        ids, labels = self.text.encode_conversation(item.turns, item.image is not None, item.image_at_end)
        _placeholders(ids, self.image_token_id, item.image is not None)
        return ids, labels

    def tokens(self, index: int) -> tuple[list[int], list[int], str | None]:
        """(ids, labels, why it teaches nothing or None) of row `index`: placeholder expanded, truncated."""
        ids, labels = self._unexpanded(index)
        if self.image_token_id in ids:
            at = ids.index(self.image_token_id)
            vision = [self.image_token_id] * self.num_image_tokens
            ids = ids[:at] + vision + ids[at + 1 :]
            if labels:
                labels = labels[:at] + [IGNORE] * self.num_image_tokens + labels[at + 1 :]
            end_of_vision = at + self.num_image_tokens
        else:
            end_of_vision = 0
        if not self.with_answers or self.max_length is None or len(ids) <= self.max_length:
            return ids, labels, None
        if end_of_vision > self.max_length:  # the image cannot be cut: the row shrinks to one ignored token
            return ids[:1], [IGNORE], f"its vision tokens end at {end_of_vision} > train.max_length"
        ids, labels = ids[: self.max_length], labels[: self.max_length]
        if all(label == IGNORE for label in labels[1:]):
            return ids, labels, "no supervised token is left within train.max_length"
        return ids, labels, None

    def length(self, index: int) -> int:
        """Tokens in row `index` (vision tokens and answers included; after truncation)."""
        return len(self.tokens(index)[0])

    def length_estimate(self, index: int) -> int:
        """A cheap stand-in for `length` that tokenizes nothing (words, plus the vision tokens), signed by
        modality as LLaVA's `modality_lengths`: negative for a text-only item. What grouped batches sort by."""
        item = self.items[index]
        words = sum(len(q.split()) + len(a.split()) for q, a in item.turns)
        return words + self.num_image_tokens if item.image is not None else -max(words, 1)

    def extent(self) -> Extent:
        """How long its sequences get and what images it holds (for the memory pre-flight). The longest rows
        are found by their words and only those are tokenized (tokenizing all would cost what laziness saves)."""
        longest = sorted(range(len(self)), key=lambda i: -abs(modality_length(self.items[i])))[:EXTENT_ROWS]
        rows = [self.tokens(i) for i in longest]
        prompts = [len(self._prompt(self.items[i])) for i in longest]
        images = len({it.image for it in self.items if it.image is not None})
        return Extent(
            tokens=max((len(ids) for ids, _, _ in rows), default=1),
            answer_tokens=max((sum(label != IGNORE for label in labels) for _, labels, _ in rows), default=1),
            prompt_tokens=max(prompts, default=1) - 1 + self.num_image_tokens,
            images=images,
            image_bytes=images * 3 * self.image_cfg.size**2 if self._cache_images else 0,
        )

    def vision_span(self, index: int) -> tuple[int, int]:
        """(start, length) of the vision tokens in item `index`'s unpadded sequence."""
        return self._unexpanded(index)[0].index(self.image_token_id), self.num_image_tokens

    # ----- rows and batches -------------------------------------------------------------------------
    def image_array(self, path: str) -> np.ndarray:
        arr = self._images.get(path)
        if arr is None:
            arr = to_array(load_image(path), self.image_cfg.size, self.image_cfg.geometry)
            if self._cache_images:
                self._images[path] = arr
        return arr

    def __getitem__(self, index: int) -> Row:
        ids, labels, dropped = self.tokens(index)
        path = self.items[index].image
        if self.mode.blind or path is None or self.image_token_id not in ids:
            return Row(ids, labels, None, index, dropped=dropped)
        try:
            array = self.image_array(path)
        except DataError as exc:
            if not self.with_answers:  # evaluation and probes: every image is needed
                raise
            if self.on_bad_image != "skip":
                raise stop_error(exc) from None
            size = self.image_cfg.size  # a grey stand-in; the row's loss is masked, so it teaches nothing
            return Row(ids, [IGNORE] * len(ids), np.full((size, size, 3), 127, np.uint8), index, path, dropped)
        return Row(ids, labels, self.mode.image(array, path), index, dropped=dropped)

    def collate(self, rows: list[Row]) -> Batch:
        """Left-padded ids, mask and labels; pixels for the rows that have vision tokens only (text-only rows
        cost no tower compute), in row order."""
        width = max(len(r.ids) for r in rows)
        n = len(rows)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        labels = torch.full((n, width), IGNORE, dtype=torch.long) if self.with_answers else None
        for i, r in enumerate(rows):
            start = width - len(r.ids)
            input_ids[i, start:] = torch.tensor(r.ids)
            attention[i, start:] = 1
            if labels is not None:
                labels[i, start:] = torch.tensor(r.labels)
        image_mask = (input_ids == self.image_token_id) & attention.bool()
        size = self.image_cfg.size
        with_image = [r for r, has in zip(rows, image_mask.any(1).tolist()) if has]
        if self.mode.blind:  # a constant image: the per-channel mean, i.e. zeros after normalization
            pixels = torch.zeros((len(with_image), 3, size, size))
        elif with_image:
            stacked = np.stack([r.image for r in with_image])
            pixels = torch.from_numpy(normalize(stacked, self.image_cfg.mean, self.image_cfg.std))
        else:
            pixels = torch.zeros((0, 3, size, size))
        bad = [(self.item_key(r.index), r.bad_image) for r in rows if r.bad_image is not None]
        dropped = [(self.item_key(r.index), r.dropped) for r in rows if r.dropped is not None]
        return Batch(input_ids, attention, image_mask, pixels, labels, [r.index for r in rows], bad, dropped)

    def item_key(self, index: int) -> str:
        """`task/item_id`: how the bad-image and dropped-row records name an item."""
        item = self.items[index]
        return f"{item.task}/{item.item_id}"


PROMPT_MEMO = 100_000  # distinct single-turn prompts kept tokenized
EXTENT_ROWS = 64  # rows tokenized to find the longest sequence


def _placeholders(ids: list[int], image_id: int, image: bool) -> list[int]:
    """Check that a prompt holds exactly one image placeholder (none for a text-only item)."""
    want = 1 if image else 0
    if ids.count(image_id) != want:
        raise UserError(
            f"the prompt format must contain exactly {want} <image> placeholder (found {ids.count(image_id)})"
        )
    return ids
