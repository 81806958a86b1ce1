"""Power: the smallest effect a study design can detect, from the paired variance of a study's own records.

The public entry points (used by `vlmlab study SPEC --check --pilot DIR`, and for planning a study):

- `minimum_detectable_effect(paired_sd, n_questions, n_seeds, alpha, power, seed_correlation)`: the smallest
  true mean paired difference a two-sided test at `alpha` detects with `power`, for a design of `n_questions`
  questions × `n_seeds` seeds;
- `pilot_variance(study_or_dir)`: per factor comparison and task of a finished (pilot) study, the paired
  standard deviation and the seed correlation that formula needs;
- `planned_power(pilot, questions, seeds)`: the MDE per task (and pooled) of a planned design from a pilot's
  table.

The model: a paired difference on question q in seed s is d = μ + u_q + e_qs, with var(u) = ρσ² (what a question
carries into every seed) and var(e) = (1 − ρ)σ², σ the paired standard deviation. The mean over Q questions × S
seeds has standard error σ·√((ρ + (1 − ρ)/S) / Q), and MDE = (z_{1−α/2} + z_power) × SE (2.80 × SE at 5% and
80%). ρ = 1 (seeds repeat each question's answers) means extra seeds add nothing; that is the default when a
pilot has one seed and ρ cannot be estimated.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from vlmlab.analysis.inference import ALPHA, POWER, detectable_multiple
from vlmlab.analysis.paired import pair_levels
from vlmlab.study.data import StudyData, load_study_data


def minimum_detectable_effect(
    paired_sd: float,
    n_questions: int,
    n_seeds: int = 1,
    alpha: float = ALPHA,
    power: float = POWER,
    seed_correlation: float = 1.0,
) -> float:
    """The smallest true mean paired difference a two-sided test at `alpha` detects with `power` over
    `n_questions` questions × `n_seeds` seeds, when one question's differences correlate `seed_correlation` across
    seeds (1: seeds repeat the answers, the conservative default). NaN when there are no questions."""
    if n_questions <= 0 or n_seeds <= 0 or not math.isfinite(paired_sd):
        return float("nan")
    rho = min(max(seed_correlation, 0.0), 1.0) if math.isfinite(seed_correlation) else 1.0
    se = paired_sd * math.sqrt((rho + (1 - rho) / n_seeds) / n_questions)
    return detectable_multiple(alpha, power) * se


def variance_components(diff: pd.DataFrame) -> tuple[float, float]:
    """(paired sd, seed correlation ρ) of rows with `task`, `item_id` and `diff`: ρ is the share of the variance
    that questions carry across their rows (one-way random effects; NaN with one row per question)."""
    d = diff["diff"].to_numpy(dtype=float)
    sd = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
    groups = diff.groupby(["task", "item_id"], sort=False)["diff"]
    m = groups.size().to_numpy(dtype=float)
    if len(m) < 2 or m.max() < 2 or not np.isfinite(sd) or sd == 0:
        return sd, float("nan")
    within = float((groups.var(ddof=1).fillna(0).to_numpy() * (m - 1)).sum() / max((m - 1).sum(), 1))
    between = max(float(groups.mean().var(ddof=1)) - within / float(np.mean(m)), 0.0)
    return sd, between / (between + within) if between + within > 0 else float("nan")


def pilot_variance(study: StudyData | str | Path) -> pd.DataFrame:
    """Per factor, non-reference level and task of a finished study: `questions`, `seeds`, `paired_sd`,
    `seed_correlation` and `accuracy` (the reference level's), from its clean records. A study with one variant
    (nothing to pair) gives, per task, the sd two independent models of its accuracy would have, √(2p(1−p)),
    marked `assumed`."""
    if not isinstance(study, StudyData):
        study = load_study_data(study)
    rows = []
    for factor, spec in study.spec.factors.items():
        levels = list(spec.levels)
        for level in levels[1:]:
            paired = pair_levels(study, factor, level, levels[0])
            for task, f in paired.frame.groupby("task", sort=False):
                sd, rho = variance_components(f)
                rows.append(
                    {
                        "comparison": f"{factor}: {level} − {levels[0]}",
                        "task": task,
                        "questions": int(f.groupby("item_id").ngroups),
                        "seeds": int(f["seed"].nunique()),
                        "paired_sd": sd,
                        "seed_correlation": rho,
                        "accuracy": float(f["value_ref"].mean()),
                        "assumed": False,
                    }
                )
    if not rows:
        clean = study.results[study.results["mode"] == "clean"]
        for task, f in clean.groupby("task", sort=False):
            p = float(f["score"].mean())
            rows.append(
                {
                    "comparison": "none (one variant)",
                    "task": task,
                    "questions": int(f["item_id"].nunique()),
                    "seeds": int(f["seed"].nunique()),
                    "paired_sd": math.sqrt(2 * p * (1 - p)),
                    "seed_correlation": float("nan"),
                    "accuracy": p,
                    "assumed": True,
                }
            )
    return pd.DataFrame(rows)


def planned_power(
    pilot: pd.DataFrame,
    questions: dict[str, int | None],
    seeds: int,
    alpha: float = ALPHA,
    power: float = POWER,
    margin: float | None = None,
) -> pd.DataFrame:
    """Per planned task (and `all tasks` pooled by rows): the pilot's paired sd and seed correlation for that task
    (the median over its comparisons; a task the pilot lacks takes the median over all its tasks, and says so),
    the planned questions (None: the pilot's count) and seeds, and the MDE; with `margin`, `ni_needs`: the smallest
    true delta at which non-inferiority within −margin is shown with `power`."""
    rows = []
    overall_sd = float(pilot["paired_sd"].median()) if len(pilot) else float("nan")
    overall_rho = float(pilot["seed_correlation"].median()) if len(pilot) else float("nan")
    for task, planned in questions.items():
        mine = pilot[pilot["task"] == task]
        sd = float(mine["paired_sd"].median()) if len(mine) else overall_sd
        rho = float(mine["seed_correlation"].median()) if len(mine) else overall_rho
        n = planned if planned is not None else (int(mine["questions"].max()) if len(mine) else 0)
        source = "pilot" if len(mine) else "pilot median (task not in pilot)"
        if len(mine) and bool(mine["assumed"].all()):
            source = "assumed from accuracy (pilot has one variant)"
        rows.append(
            {
                "task": task,
                "questions": n,
                "seeds": seeds,
                "paired_sd": sd,
                "seed_correlation": rho if math.isfinite(rho) else 1.0,
                "variance_from": source + ("" if math.isfinite(rho) else "; ρ = 1 assumed"),
                "mde": minimum_detectable_effect(sd, n, seeds, alpha, power, rho if math.isfinite(rho) else 1.0),
            }
        )
    table = pd.DataFrame(rows)
    if len(table) > 1:
        total = table["questions"].sum()
        se = math.sqrt(
            float(((table["questions"] / total) ** 2 * (table["mde"] / detectable_multiple(alpha, power)) ** 2).sum())
        )
        pooled = {
            "task": "all tasks (pooled)",
            "questions": int(total),
            "seeds": seeds,
            "variance_from": "the tasks above",
        }
        table = pd.concat([table, pd.DataFrame([{**pooled, "mde": detectable_multiple(alpha, power) * se}])])
    if margin is not None:
        table["ni_needs"] = -margin + table["mde"]
    return table.reset_index(drop=True)
