"""An analysis's typed result as JSON and back: tables keep their columns, dtypes and full precision.

A result is a dataclass whose fields are plain values (numbers, strings, lists, dicts) and DataFrames
(also inside lists and dicts). Encoded, a DataFrame is `{"frame": {"columns", "dtypes", "rows"}}` with
NaN as null; decoding restores the dtypes, so rendering a result read from disk gives exactly what
rendering it straight after computing would.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, TypeVar

import numpy as np
import pandas as pd

R = TypeVar("R")


def _plain(value: Any, in_frame: bool = False) -> Any:
    """A JSON-able Python value: numpy scalars unwrapped, containers recursed; a non-finite float is null in a
    table cell (its column's dtype brings NaN back) and `{"float": "nan"}` elsewhere (standard JSON has no NaN)."""
    if isinstance(value, pd.DataFrame):
        return {"frame": _frame(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v, in_frame) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, in_frame) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if in_frame else {"float": str(value)}
    return value


def _frame(frame: pd.DataFrame) -> dict[str, Any]:
    frame = frame.reset_index(drop=True)
    return {
        "columns": [str(c) for c in frame.columns],
        "dtypes": [str(t) for t in frame.dtypes],
        "rows": [[_plain(v, in_frame=True) for v in row] for row in frame.itertuples(index=False, name=None)],
    }


def _unframe(data: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame(data["rows"], columns=data["columns"])
    if frame.empty and not data["columns"]:
        return pd.DataFrame()
    for column, dtype in zip(data["columns"], data["dtypes"]):
        if dtype.startswith(("float", "int", "bool")):
            frame[column] = frame[column].astype("float64" if dtype.startswith("float") else dtype)
    return frame


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"frame"} and isinstance(value["frame"], dict):
            return _unframe(value["frame"])
        if set(value) == {"float"}:
            return float(value["float"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def to_json(result: Any) -> dict[str, Any]:
    """The dataclass `result` as JSON-able data."""
    return {f.name: _plain(getattr(result, f.name)) for f in dataclasses.fields(result)}


def from_json(cls: type[R], data: dict[str, Any]) -> R:
    """The `cls` dataclass back from `to_json`'s data (numbers stored as null come back as NaN in float columns)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: _decode(v) for k, v in data.items() if k in names})
