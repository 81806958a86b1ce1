"""The record every task yields: one question about one image with its gold answer (or, for training, a whole
conversation, possibly without an image)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VQAItem:
    item_id: str  # unique within the task and split
    task: str
    category: str
    question: str
    answer: str  # the training target (and the gold answer of single-answer metrics)
    image: str | None  # path to the image file; None for a text-only training record (LLaVA's ShareGPT part)
    answers: tuple[str, ...] = ()  # every human answer (VQAv2's ten); empty when there is one gold answer
    # A grounding answer in the original image's pixels (x1, y1, x2, y2) and that image's (width, height):
    # `load_source` rewrites `answer` as this box in the processed image's 0-99 units (see images.project_box).
    box: tuple[float, float, float, float] | None = None
    image_size: tuple[int, int] | None = None
    frame: tuple[int, str] | None = None  # the processed image (side, geometry) `answer` is expressed in
    native_id: str | None = None  # the benchmark's own id of the question (what LLaVA's question files key on)
    # A multi-turn training conversation: every (user, assistant) turn, the first being (question, answer).
    # Empty for a single-turn item. Training supervises every assistant turn; evaluation asks `question` only.
    conversation: tuple[tuple[str, str], ...] = ()
    image_at_end: bool = False  # the image placeholder follows the first question (some LLaVA records)

    @property
    def turns(self) -> list[tuple[str, str]]:
        """The (user, assistant) turns to train on."""
        return list(self.conversation) if self.conversation else [(self.question, self.answer)]

    def __post_init__(self):
        if self.box is not None and self.image_size is None:
            raise ValueError(f"item {self.item_id}: a box needs the image_size it is measured in")
