"""The record every task yields: one question about one image with its gold answer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VQAItem:
    item_id: str  # unique within the task and split
    task: str
    category: str
    question: str
    answer: str  # the training target (and the gold answer of single-answer metrics)
    image: str  # path to the image file
    answers: tuple[str, ...] = ()  # every human answer (VQAv2's ten); empty when there is one gold answer
    # A grounding answer in the original image's pixels (x1, y1, x2, y2) and that image's (width, height):
    # `load_source` rewrites `answer` as this box in the processed image's 0-99 units (see images.project_box).
    box: tuple[float, float, float, float] | None = None
    image_size: tuple[int, int] | None = None
    frame: tuple[int, str] | None = None  # the processed image (side, geometry) `answer` is expressed in
    native_id: str | None = None  # the benchmark's own id of the question (what LLaVA's question files key on)

    def __post_init__(self):
        if self.box is not None and self.image_size is None:
            raise ValueError(f"item {self.item_id}: a box needs the image_size it is measured in")
