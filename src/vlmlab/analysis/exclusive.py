"""`exclusive-capabilities`: categories one variant solves while every other stays near chance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd
from pydantic import Field

from vlmlab.analysis.base import Analysis
from vlmlab.metrics import accuracy_by
from vlmlab.registry import PartParams, register_analysis
from vlmlab.render import plots
from vlmlab.render.document import Section
from vlmlab.study.data import StudyData


def chance_levels(records: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per group: the chance level a capability is measured against, and where it comes from.

    With a blind evaluation: the best blind accuracy of any variant (what the question alone gets).
    Without: the majority-answer rate (the best constant answer).
    """
    keys = _keys(by)
    clean = records[records["mode"] == "clean"]
    blind = accuracy_by(records[records["mode"] == "blind"], keys + ["variant"]).sort_index()
    rows = []
    for key, f in clean.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        b = blind.xs(key, level=tuple(keys)) if len(blind) and key in blind.index.droplevel("variant") else None
        if b is not None and len(b):
            chance, source = float(b.max()), "best blind accuracy"
        else:
            firsts = f.drop_duplicates(["seed", "item_id"])
            chance, source = float(firsts["answer"].value_counts(normalize=True).iloc[0]), "majority answer"
        rows.append({**dict(zip(keys, key)), "chance": chance, "chance_from": source})
    return pd.DataFrame(rows)


def _keys(by: str) -> list[str]:
    return ["task"] if by == "task" else ["task", by]


def exclusive_table(records: pd.DataFrame, by: str, above: float, near: float) -> pd.DataFrame:
    """Accuracy per group and variant; `exclusive_to` names the one variant ≥ chance+above while all others ≤ chance+near."""
    clean = records[records["mode"] == "clean"]
    variants = list(dict.fromkeys(clean["variant"]))
    keys = _keys(by)
    acc = accuracy_by(clean, keys + ["variant"]).unstack("variant")[variants].reset_index()
    table = acc.merge(chance_levels(records, by), on=keys, how="left")
    exclusive = []
    for _, r in table.iterrows():
        capable = [v for v in variants if r[v] >= r["chance"] + above]
        rest_near = all(r[v] <= r["chance"] + near for v in variants if v not in capable)
        exclusive.append(capable[0] if len(capable) == 1 and len(variants) > 1 and rest_near else "")
    table["exclusive_to"] = exclusive
    return table


def format_error_table(records: pd.DataFrame, low: float, high: float) -> pd.DataFrame:
    """Box-output tasks: format-error rate per variant; `exclusive_to` = the one variant ≤ low while all others ≥ high."""
    clean = records[(records["mode"] == "clean") & records["format_error"].notna()]
    boxed = clean[clean.groupby("task")["format_error"].transform("any") | clean["task"].str.contains("ground")]
    if boxed.empty:
        return pd.DataFrame()
    variants = list(dict.fromkeys(boxed["variant"]))
    rates = (
        boxed.groupby(["task", "variant"], sort=False)["format_error"].mean().unstack("variant")[variants].reset_index()
    )
    rates["exclusive_to"] = [
        next((v for v in variants if r[v] <= low and all(r[o] >= high for o in variants if o != v)), "")
        if len(variants) > 1
        else ""
        for _, r in rates.iterrows()
    ]
    return rates


@dataclass
class ExclusiveResult:
    variants: list[str]
    accuracy: pd.DataFrame  # per task (/ category): accuracy per variant, chance, where chance comes from, exclusive_to
    format_errors: pd.DataFrame  # box tasks: format-error rate per variant, exclusive_to (empty: no box task)


@register_analysis("exclusive-capabilities")
class ExclusiveCapabilities(Analysis):
    """Where one variant can do something the others cannot (at all): accuracy well above chance vs near it."""

    class Params(PartParams):
        by: Literal["category", "task"] = "category"
        above: float = Field(0.20, ge=0, le=1)  # the capable variant: accuracy ≥ chance + above
        near: float = Field(0.05, ge=0, le=1)  # every other variant: accuracy ≤ chance + near
        format_low: float = Field(0.10, ge=0, le=1)  # box tasks: the one variant's format-error rate ≤ this...
        format_high: float = Field(0.50, ge=0, le=1)  # ...while every other's is ≥ this

    title = "Exclusive capabilities"
    Result = ExclusiveResult

    def compute(self, study: StudyData, measured) -> ExclusiveResult:
        p = self.params
        return ExclusiveResult(
            variants=study.variants,
            accuracy=exclusive_table(study.results, p.by, p.above, p.near),
            format_errors=format_error_table(study.results, p.format_low, p.format_high),
        )

    def render(self, t: ExclusiveResult) -> Section:
        p, section = self.params, Section(self.title)
        acc = t.accuracy
        section.text(
            f"A {p.by} is *exclusive* to a variant when that variant's accuracy is at least chance + {p.above:.2f} "
            f"while every other variant stays within chance + {p.near:.2f}. Chance is the best blind accuracy of any "
            "variant when the study evaluates blind (what the question alone gets), else the majority-answer rate."
        )
        frame = acc.set_index(_keys(p.by))
        gap = frame[t.variants].sub(frame["chance"], axis=0)
        gap.index = [" / ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in gap.index]
        section.figure(
            plots.heatmap(gap, "accuracy − chance", centre=0.0),
            f"Accuracy above chance per {p.by} and variant.",
            "exclusive_capabilities",
        )
        found = acc[acc["exclusive_to"] != ""]
        if found.empty:
            section.text(f"No {p.by} is exclusive to one variant at these thresholds.")
        for _, r in found.iterrows():
            section.text(
                f"`{r['task']}`{'' if p.by == 'task' else ' / ' + str(r[p.by])}: only **{r['exclusive_to']}** "
                f"({r[r['exclusive_to']]:.3f} vs chance {r['chance']:.3f})."
            )
        section.table(acc, f"Accuracy per {p.by} (clean images) with the chance level it is compared against.")
        fe = t.format_errors
        if not fe.empty:
            section.table(
                fe,
                f"Box-output tasks: format-error rate per variant; `exclusive_to` = the only variant at or "
                f"below {p.format_low:.2f} while all others are at or above {p.format_high:.2f}.",
            )
        return section
