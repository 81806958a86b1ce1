"""`vlmlab study SPEC --check --pilot DIR`: what the planned design could detect, from a pilot study's records."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from vlmlab.analysis.power import pilot_variance, planned_power
from vlmlab.progress import console
from vlmlab.study.data import load_study_data


def print_planned_power(study, pilot_dir: str | Path) -> None:
    """Per evaluation task of the planned study (its first variant's `data.eval`): the minimum detectable paired
    accuracy difference at 80% power (two-sided 5%), from the pilot's paired variance, and the true delta at which
    non-inferiority within −margin (the spec's `claims` margin, default 0.02) would be shown."""
    claims = next((a for a in study.spec.analyses if a.id == "claims"), None)
    margin = float((claims.model_extra or {}).get("margin", 0.02)) if claims is not None else 0.02
    pilot = pilot_variance(load_study_data(pilot_dir))
    sources = study.variants[0].cfg.data.eval
    questions = {s.task: s.limit for s in sources}
    plan = planned_power(pilot, questions, len(study.spec.seeds), margin=margin)
    table = Table(
        title=f"What this design could detect (80% power, two-sided 5%; NI: within −{margin:.2f}), from {pilot_dir}"
    )
    for col in ("task", "questions", "seeds", "paired sd", "seed ρ", "MDE", "NI needs", "variance from"):
        table.add_column(col)
    for _, r in plan.iterrows():
        sd = "" if r["paired_sd"] != r["paired_sd"] else f"{r['paired_sd']:.3f}"
        rho = "" if r.get("seed_correlation") != r.get("seed_correlation") else f"{r['seed_correlation']:.2f}"
        table.add_row(
            str(r["task"]),
            str(int(r["questions"])),
            str(int(r["seeds"])),
            sd,
            rho,
            f"±{r['mde']:.3f}",
            f"delta ≥ {r['ni_needs']:+.3f}",
            str(r["variance_from"]),
        )
    console.print(table)
    console.print(
        "MDE: the smallest true mean paired accuracy difference the design detects; a claim tested per task uses "
        "the task's row, a claim on every task pooled the last row (a Bonferroni- or Holm-adjusted test needs more).",
        soft_wrap=True,
        highlight=False,
    )
