"""A DataFrame as a Markdown table (the benchmarks' output for benchmarks/RESULTS.md; no tabulate dependency)."""

from __future__ import annotations

import pandas as pd


def md_table(frame: pd.DataFrame, digits: int = 3, index: bool = False) -> str:
    """Pipe table; floats to `digits` decimals, missing values blank."""
    if index:
        frame = frame.reset_index()

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return str(value).replace("|", "\\|")

    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])
