"""The record every task yields: one question about one image with its gold answer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VQAItem:
    item_id: str  # unique within the task and split
    task: str
    category: str
    question: str
    answer: str
    image: str  # path to the image file
