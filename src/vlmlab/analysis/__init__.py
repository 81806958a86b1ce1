"""Analyses over a study's records: each registers with `@register_analysis` and returns a report section."""

from vlmlab.analysis import (  # noqa: F401
    attention,
    calibration,
    claims,
    collapse,
    exclusive,
    factor_effects,
    overlap,
    representations,
    routing_cost,
    vision_pretraining,
    visual_reliance,
)
from vlmlab.analysis.base import Analysis  # noqa: F401
