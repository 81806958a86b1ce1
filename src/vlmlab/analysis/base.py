"""The analysis interface: `compute` a typed result from a study's records and measurements; `render` it as a section.

Computing and rendering are separate steps with a file between them (`analysis/<name>.json`): `vlmlab
analyze` measures what the analyses need and computes them; `vlmlab report` only reads those results and
renders them, so it runs no model and two reports of one study are the same.
"""

from __future__ import annotations

from typing import Any, ClassVar

from vlmlab.measure.base import Measurement
from vlmlab.registry import PartParams
from vlmlab.render.document import Section
from vlmlab.study.data import StudyData


class Analysis:
    """Subclasses set `title` and `Result` (a dataclass), define `Params` (their spec fields) and implement
    `compute` and `render`; one that probes trained models lists its probes in `measurements`."""

    class Params(PartParams):
        pass

    title: ClassVar[str] = ""
    Result: ClassVar[type]
    version: ClassVar[int] = 1  # bump when `compute` changes what it returns for the same inputs

    def __init__(self, params: PartParams):
        self.params = params

    def measurements(self, study: StudyData) -> list[Measurement]:
        """The probes of trained runs this analysis reads (made before `compute`, reused when stored)."""
        return []

    def compute(self, study: StudyData, measured: list[Measurement]) -> Any:  # pragma: no cover - interface
        """The result, from the study's records and `measured` (this analysis's `measurements`, all made)."""
        raise NotImplementedError

    def render(self, result: Any) -> Section:  # pragma: no cover - interface
        """The report section for a result (text, tables, figures); reads nothing else."""
        raise NotImplementedError
