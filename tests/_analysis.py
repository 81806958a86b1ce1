"""Test helper: an analysis computed, saved as JSON and read back, then rendered (the analyze -> report path)."""

from __future__ import annotations

import json

from vlmlab.analysis import result as result_io


def round_trip(result):
    """The result as `vlmlab report` sees it: through `analysis/<name>.json` (strict JSON) and back."""
    text = json.dumps(result_io.to_json(result), allow_nan=False)
    return result_io.from_json(type(result), json.loads(text))


def computed_section(analysis, study, measured=()):
    """`analysis.render` of its `compute` on `study`, after the JSON round trip."""
    return analysis.render(round_trip(analysis.compute(study, list(measured))))
