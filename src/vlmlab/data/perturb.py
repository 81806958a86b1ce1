"""Deterministic image perturbations for evaluation (`--perturb noise:σ`, `--perturb shift:px`)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from vlmlab.errors import UserError
from vlmlab.metrics import parse_box

KINDS = ("noise", "shift")


@dataclass(frozen=True)
class Perturbation:
    """`noise`: Gaussian noise of std `amount` (pixel range [0, 1]), drawn from a seed fixed per image,
    so every variant sees the same noisy image. `shift`: translate right and down by `amount` pixels,
    filling the uncovered border with the edge pixels."""

    kind: str
    amount: float

    @property
    def tag(self) -> str:
        """A file-name-safe label, e.g. `noise-0.1`, `shift-4`."""
        return f"{self.kind}-{self.amount:g}"

    def apply(self, image: np.ndarray, key: str) -> np.ndarray:
        """Perturb one (H, W, 3) uint8 image; `key` (the image path) seeds the noise."""
        if self.kind == "noise":
            rng = np.random.default_rng(zlib.crc32(key.encode()))
            noisy = image.astype(np.float32) / 255.0 + rng.normal(0.0, self.amount, image.shape).astype(np.float32)
            return (np.clip(noisy, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        px = min(int(self.amount), image.shape[0])  # beyond the side everything has left the view anyway
        if px == 0:
            return image
        padded = np.pad(image, ((px, 0), (px, 0), (0, 0)), mode="edge")
        return np.ascontiguousarray(padded[: image.shape[0], : image.shape[1]])


def shift_box_answer(perturbation: Perturbation | None, answer: str, size: int) -> str:
    """A box answer (`[x1, y1, x2, y2]` in 0-99 of the processed image) moved with a `shift` perturbation, so
    grounding under shift is scored against where the object now is; other answers are returned as they are."""

    if perturbation is None or perturbation.kind != "shift" or not int(perturbation.amount):
        return answer
    box = parse_box(answer)
    if box is None or not answer.strip().startswith("["):
        return answer
    offset = int(perturbation.amount) * 99 / size  # pixels of the processed image -> 0-99 units
    moved = [min(99, max(0, int(np.floor(v + offset + 0.5)))) for v in box]
    return "[" + ", ".join(str(c) for c in moved) + "]"


MAX_NOISE = 1.0  # pixel values are in [0, 1]: a larger sigma leaves nothing of the image
MAX_SHIFT = 4096  # the largest processed image side: a larger shift moves everything out of view


def parse_perturbation(spec: str) -> Perturbation:
    """`noise:0.1` (0 <= sigma <= 1) or `shift:4` (whole pixels, 0 <= px <= 4096); anything else is one line."""
    kind, _, value = spec.partition(":")
    try:
        amount = float(value)
    except ValueError:
        amount = float("nan")
    if kind not in KINDS or not value or not amount >= 0 or (kind == "shift" and amount != int(amount)):
        raise UserError(
            f"--perturb {spec!r}: expected noise:SIGMA (e.g. noise:0.1) or shift:PIXELS (e.g. shift:4)", exit_code=2
        )
    limit = MAX_NOISE if kind == "noise" else MAX_SHIFT
    if amount > limit:
        raise UserError(f"--perturb {spec!r}: {kind} must be at most {limit:g}", exit_code=2)
    return Perturbation(kind, amount)
