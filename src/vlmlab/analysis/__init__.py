"""Analyses over a study's records: each registers with `@register_analysis` and returns a report section."""

from vlmlab.analysis import calibration, exclusive, factor_effects, overlap, representations, visual_reliance  # noqa: F401
from vlmlab.analysis.base import Analysis  # noqa: F401
