"""`vlmlab analyze`: make the measurements a study's analyses need, compute each, save `analysis/<name>.json`.

A saved result names the results it was computed from (`inputs`: the hash of the study's vouched-for
results, the analysis's params and version), so the report can tell a current result from a stale one.
External variants (answers from files) are variants like any other for the analyses that read records; one
that probes trained runs (it lists measurements: attention profile, representations, costs, the seed claims)
computes on the trained variants only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmlab import io
from vlmlab.analysis import result as result_io
from vlmlab.analysis.base import Analysis
from vlmlab.errors import UserError
from vlmlab.measure.base import measure_all
from vlmlab.progress import console
from vlmlab.registry import ANALYSES
from vlmlab.study.data import StudyData, load_study_data, results_fingerprint
from vlmlab.study.spec import AnalysisSpec, build_analysis

DEFAULT_ANALYSES = ("visual-reliance",)


@dataclass
class Planned:
    """One analysis of a study: the name its result is saved under, its spec entry and the built analysis."""

    name: str
    spec: AnalysisSpec
    analysis: Analysis

    def inputs(self, study: StudyData) -> str:
        params = self.analysis.params.model_dump(mode="json")
        version = type(self.analysis).version
        return io.content_hash({"results": results_fingerprint(study.dir), "params": params, "version": version})


def analysis_specs(study: StudyData, only: list[str] | None = None) -> list[AnalysisSpec]:
    """The study's analyses (its spec's list, else the defaults); `only` picks ids, adding registered ones not listed."""
    specs = study.spec.analyses or [AnalysisSpec(id=a) for a in DEFAULT_ANALYSES]
    if only is None:
        return specs
    by_id = {s.id: s for s in specs}
    return [by_id.get(a, AnalysisSpec(id=a)) for a in only]


def plan(study: StudyData, specs: list[AnalysisSpec]) -> list[Planned]:
    """Each spec entry built; an id listed twice (with other fields) is saved as `<id>-2`, `<id>-3`, ..."""
    out, seen = [], {}
    for i, spec in enumerate(specs):
        seen[spec.id] = seen.get(spec.id, 0) + 1
        name = spec.id if seen[spec.id] == 1 else f"{spec.id}-{seen[spec.id]}"
        out.append(Planned(name, spec, build_analysis(spec, f"analyses.{i}")))
    return out


def probes_runs(analysis: Analysis) -> bool:
    """Whether an analysis probes trained runs (it lists measurements): it sees the trained variants only, since
    an external variant has answers but no weights."""
    return type(analysis).measurements is not Analysis.measurements


def view(study: StudyData, analysis: Analysis, name: str) -> StudyData:
    """The study as `analysis` computes on it: every variant, or the trained ones for an analysis that probes runs."""
    if not study.external or not probes_runs(analysis):
        return study
    if not study.trained_variants:
        raise UserError(
            f"analysis {name}: it probes trained runs, and every variant of {study.path} is external answers "
            "(drop it from the spec's analyses or --only)"
        )
    return study.trained_only()


def analyze_study(path: str | Path, only: list[str] | None = None) -> list[Path]:
    """Measure (reusing stored measurements), compute and save every planned analysis of a finished study."""
    study = load_study_data(path)
    planned = plan(study, analysis_specs(study, only))
    views = {p.name: view(study, p.analysis, p.name) for p in planned}
    measured = {p.name: p.analysis.measurements(views[p.name]) for p in planned}
    measure_all([m for ms in measured.values() for m in ms])
    written = []
    for p in planned:
        console.print(f"analysis {p.name}: computing", highlight=False)
        result = p.analysis.compute(views[p.name], measured[p.name])
        record = {
            "id": p.spec.id,
            "params": p.analysis.params.model_dump(mode="json"),
            "title": p.analysis.title,
            "inputs": p.inputs(study),
            "result": result_io.to_json(result),
        }
        target = study.dir.analysis_result(p.name)
        io.write_json(target, record)
        written.append(target)
    return written


@dataclass
class Saved:
    """A planned analysis and what is saved for it: the result (None when absent) and whether it is current."""

    planned: Planned
    result: Any
    current: bool


def saved_results(study: StudyData) -> list[Saved]:
    """The study's analyses with their saved results, for rendering: the spec's analyses (or the defaults) in
    its order, then any other analysis computed for it (`vlmlab analyze --only/--all`), in registry order."""
    planned = plan(study, analysis_specs(study))
    names = {p.name for p in planned}
    extra = [
        AnalysisSpec(**{"id": i, **_saved(study, i).get("params", {})})
        for i in ANALYSES.ids()
        if i not in names and study.dir.analysis_result(i).is_file()
    ]
    planned += plan(study, extra)
    out = []
    for p in planned:
        saved = _saved(study, p.name)
        try:
            result = result_io.from_json(p.analysis.Result, saved["result"])
        except (KeyError, TypeError, ValueError):  # never computed, or saved by another version of the analysis
            result = None
        out.append(Saved(p, result, current=result is not None and saved.get("inputs") == p.inputs(study)))
    return out


def _saved(study: StudyData, name: str) -> dict[str, Any]:
    file = study.dir.analysis_result(name)
    if not file.is_file():
        return {}
    try:
        record = io.read_json(file)
    except (UserError, ValueError):  # a torn, foreign or unbounded file: absent, recomputed by `vlmlab analyze`
        return {}
    return record if isinstance(record, dict) else {}
