"""The analysis interface: read a StudyData, return a report Section (text, tables, figures)."""

from __future__ import annotations

from vlmlab.registry import PartParams
from vlmlab.report.document import Section
from vlmlab.study.data import StudyData


class Analysis:
    """Subclasses set `title`, define `Params` (their spec fields) and implement `run`."""

    class Params(PartParams):
        pass

    title = ""

    def __init__(self, params: PartParams):
        self.params = params

    def run(self, study: StudyData) -> Section:  # pragma: no cover
        raise NotImplementedError


def paired_bootstrap_ci(a, b, samples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% interval of mean(a - b) resampling paired items (a, b: per-item scores of the same items)."""
    import numpy as np

    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(diff) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
