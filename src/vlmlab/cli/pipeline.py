"""The step after a study's runs, shared by `vlmlab study`, `analyze` and `demo`: analyses, then the report."""

from __future__ import annotations

from pathlib import Path

from vlmlab import io


def analyze_and_report(study_dir: str | Path, only: list[str] | None = None, report: bool = True):
    """Measure what the analyses need and compute them (`only`: these analyses), then render the report; all of it
    written into the study through no link (`io.confined`). Returns (analysis files written, report.html or None)."""
    from vlmlab.analysis.run import analyze_study
    from vlmlab.report.study_report import build_report

    with io.confined(Path(study_dir)):
        written = analyze_study(study_dir, only=only)
        html = build_report(study_dir)[0] if report else None
    return written, html
