"""How an evaluation shows the images: as they are, replaced by a constant (blind), or perturbed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlmlab.data.perturb import Perturbation, parse_perturbation, shift_box_answer
from vlmlab.errors import UserError


@dataclass(frozen=True)
class EvalMode:
    """One evaluation mode. Its `name` is the results' `mode` column (`clean`, `blind`, `noise-0.1`, …), its
    `suffix` the run's file names (`predictions{suffix}.parquet`), and it transforms each image (and, for a
    shift, the gold boxes that move with the image)."""

    blind: bool = False
    perturbation: Perturbation | None = None

    def __post_init__(self) -> None:
        if self.blind and self.perturbation is not None:
            raise UserError("--blind and --perturb exclude each other (a constant image has nothing to perturb)", 2)

    @property
    def name(self) -> str:
        return "blind" if self.blind else self.perturbation.tag if self.perturbation else "clean"

    @property
    def suffix(self) -> str:
        """`""` for clean, `_blind`, or `_<perturbation tag>` (e.g. `_noise-0.1`)."""
        return "" if self.name == "clean" else f"_{self.name}"

    @property
    def perturb_tag(self) -> str:
        """The records' `perturb` column: the perturbation's tag, `""` for none."""
        return self.perturbation.tag if self.perturbation else ""

    def image(self, image: np.ndarray, key: str) -> np.ndarray | None:
        """The image as this mode shows it: None when blind (the dataset draws its constant image), else the
        image perturbed (seeded by `key`, the image path) or as it is."""
        if self.blind:
            return None
        return self.perturbation.apply(image, key) if self.perturbation else image

    def answer(self, answer: str, size: int) -> str:
        """The gold answer under this mode: a box moves with a `shift` perturbation; everything else stays."""
        return shift_box_answer(self.perturbation, answer, size)

    @classmethod
    def parse(cls, spec: str) -> EvalMode:
        """`clean`, `blind`, or a perturbation such as `noise:0.1` / `shift:4`."""
        if spec == "clean":
            return CLEAN
        if spec == "blind":
            return BLIND
        return cls(perturbation=parse_perturbation(spec))


CLEAN = EvalMode()
BLIND = EvalMode(blind=True)
