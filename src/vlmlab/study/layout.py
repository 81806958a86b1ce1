"""A study directory's layout (the one place that names a study's files; each variant's run is a RunDir), and a
prepared study: its spec, resolved variants, control check and directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmlab.runs import RunDir
from vlmlab.study.spec import StudySpec, Variant


class StudyDir:
    """`runs/<study>/{study.yaml, control.json, variants/<variant>/seed-<s>/, external/<name>/, results.parquet,
    summary.csv, provenance.json, complete.json, analysis/<id>.json, report.html, report.md, figures/, cache/}`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    spec = property(lambda self: self.path / "study.yaml")
    control = property(lambda self: self.path / "control.json")
    results = property(lambda self: self.path / "results.parquet")
    summary = property(lambda self: self.path / "summary.csv")
    provenance = property(lambda self: self.path / "provenance.json")  # what the runs did beyond their configs
    complete = property(lambda self: self.path / "complete.json")  # written last: names the results it vouches for
    analysis = property(lambda self: self.path / "analysis")  # one <id>.json per computed analysis
    report_html = property(lambda self: self.path / "report.html")
    report_md = property(lambda self: self.path / "report.md")
    figures = property(lambda self: self.path / "figures")  # report.md's figures
    vision_cache = property(lambda self: self.path / "cache" / "vision-pretrain")

    def run(self, variant: str, seed: int) -> RunDir:
        """The run directory of one variant under one seed."""
        return RunDir(self.path / "variants" / variant / f"seed-{seed}")

    def external(self, name: str) -> RunDir:
        """An external variant's scored answers: `external/<name>/{predictions.parquet, metrics.json, done.json}`."""
        return RunDir(self.path / "external" / name)

    def analysis_result(self, name: str) -> Path:
        return self.analysis / f"{name}.json"


@dataclass
class Study:
    """A study prepared for running (`vlmlab.study.runner.prepare_study`): nothing trained or loaded yet."""

    spec: StudySpec
    variants: list[Variant]
    control: dict[str, Any]
    dir: StudyDir
    # measurements a variant's config is still to be read off (`layer: auto`), with the keys that need them
    pending: list[tuple[Any, str, str]] = field(default_factory=list)
    external: list[Any] = field(default_factory=list)  # vlmlab.study.external.ExternalRun: answers from files

    def run_dir(self, v: Variant) -> RunDir:
        return self.dir.run(v.name, v.seed)
