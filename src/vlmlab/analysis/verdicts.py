"""How a claim of a seed paper is judged: the verdict words, the shared decision rules and the claim record.

Verdicts (docs/studies.md, "How a verdict is computed"):

- *reproduced* / *not reproduced*: the claim's pre-stated test decides, every seed's own result points the same
  way, and the test survives Holm's adjustment over the report's primary tests;
- *inconclusive at this scale*: the interval leaves the decision open (the study's minimum detectable effect says
  how large an effect it could have seen);
- *seeds disagree*: the pooled test decides, but some seed's own result points the other way;
- *missing data*: the comparison lacks a task (or questions) the claim needs; the missing ones are named;
- *not tested*: the design cannot test the claim (no such factor or task, no paired items, no confidence), and
  the evidence says why.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from vlmlab.analysis.inference import ALPHA, Estimate
from vlmlab.analysis.paired import Comparison, Paired, n_text, per_task
from vlmlab.config import read_yaml
from vlmlab.study.data import StudyData

REPRODUCED, NOT, INCONCLUSIVE, UNTESTED = "reproduced", "not reproduced", "inconclusive at this scale", "not tested"
SEEDS_DISAGREE, MISSING = "seeds disagree", "missing data"
DECIDED = (REPRODUCED, NOT)
NO_PAIRS = "No item pairs up between the compared levels (no two runs differ in this factor alone)."


def superiority(c: Comparison) -> tuple[str, float]:
    """(verdict, two-sided p): *reproduced* when the interval is above 0 and every seed's own delta is positive;
    *not reproduced* when it is below 0 and every seed's delta negative; *seeds disagree* when the interval decides
    but a seed does not follow; else *inconclusive*."""
    e = c.pooled
    if e.above(0):
        return (REPRODUCED if c.seeds_agree(1) else SEEDS_DISAGREE), e.p_two(0)
    if e.below(0):
        return (NOT if c.seeds_agree(-1) else SEEDS_DISAGREE), e.p_two(0)
    return INCONCLUSIVE, e.p_two(0)


def non_inferiority(paired: Paired, margin: float) -> dict:
    """ "Matches or beats" on every task: each task's own delta (its questions resampled) must have its interval above
    −margin and every seed's own delta above −margin (an intersection-union test: no adjustment is needed, p is the
    largest task's). *Not reproduced* when some task's interval lies below −margin (Bonferroni over tasks); *missing
    data* when every present task passes but a task one level has did not pair; else *inconclusive*.
    Returns verdict, p, the per-task estimates and seed deltas, the missing tasks, the MDE text and the evidence."""
    tasks = per_task(paired, thresholds=(-margin,))
    missing = paired.missing_tasks()
    passes = {t: e.above(-margin) and all(d > -margin for d in s.values()) for t, (e, s) in tasks.items()}
    pooled_only = {t: e.above(-margin) and not passes[t] for t, (e, _) in tasks.items()}
    fails = {t: e.below(-margin) for t, (e, _) in tasks.items()}
    p_pass = max((2 * e.p_above[-margin] for e, _ in tasks.values()), default=float("nan"))
    p_fail = min((2 * e.p_below[-margin] * len(tasks) for e, _ in tasks.values()), default=float("nan"))
    if any(fails.values()):
        verdict, p = NOT, p_fail
    elif tasks and all(passes.values()):
        verdict, p = (MISSING if missing else REPRODUCED), p_pass
    elif tasks and any(pooled_only.values()) and all(passes[t] or pooled_only[t] for t in tasks):
        verdict, p = SEEDS_DISAGREE, p_pass
    else:
        verdict, p = INCONCLUSIVE, min(p_pass, p_fail)
    worst = max((-margin + e.mde() for e, _ in tasks.values()), default=float("nan"))
    evidence = "; ".join(
        f"{t} {e.text()} ({n_text(e.questions, e.seeds)}"
        + (", per seed " + ", ".join(f"{d:+.3f}" for d in s.values()) if len(s) > 1 else "")
        + (", passes" if passes[t] else ", fails" if fails[t] else ", open")
        + ")"
        for t, (e, s) in tasks.items()
    )
    if missing:
        evidence += "; missing: " + ", ".join(f"{t} ({why})" for t, why in missing.items())
    return {
        "verdict": verdict,
        "p": float(min(1.0, p)) if not math.isnan(p) else p,
        "tasks": tasks,
        "missing": missing,
        "mde": f"NI when every task's true delta ≥ {worst:+.3f}" if tasks else "",
        "evidence": evidence,
    }


def claim(
    paper: str,
    cid: str,
    text: str,
    verdict: str,
    evidence: str,
    analysis: str,
    figure=None,
    *,
    seeds: int = 0,
    questions: int = 0,
    estimate: str = "",
    mde: str = "",
    p: float = float("nan"),
) -> dict:
    """One claim's record: `p` is its primary test's p-value (NaN: no test, so no part in Holm's family), `estimate`
    its effect with the interval, `mde` the smallest effect the study could detect, `figure` the frame its panel
    draws (None: no panel)."""
    return {
        "id": cid,
        "paper": paper,
        "claim": text,
        "verdict": verdict,
        "seeds": int(seeds),
        "questions": int(questions),
        "estimate": estimate,
        "mde": mde,
        "p": float(p),
        "evidence": evidence,
        "analysis": analysis,
        "figure": figure,
    }


def verdict_cell(verdict: str, seeds: int) -> str:
    """The verdict as the report shows it: with the seed count it rests on ("reproduced, 1 seed")."""
    if verdict == UNTESTED or not seeds:
        return verdict
    return f"{verdict}, {seeds} seed{'s' if seeds != 1 else ''}"


def mde_text(e: Estimate) -> str:
    return f"±{e.mde():.3f}" if np.isfinite(e.se) else ""


def factor_declaring(study: StudyData, key: str) -> str | None:
    """The first factor that declares `key` or a key under it (`model.vision` matches `model.vision.id`)."""
    for name, factor in study.spec.factors.items():
        if any(k == key or k.startswith(key + ".") for k in factor.keys):
            return name
    return None


def level_of(study: StudyData, variant: str, factor: str) -> str:
    return str(study.results.loc[study.results["variant"] == variant, factor].iloc[0])


def delta_frame(rows: dict[str, Comparison | Estimate | None]) -> pd.DataFrame:
    """Labelled deltas as the frame a claim's panel draws (label, delta, ci_low, ci_high)."""
    out = []
    for k, d in rows.items():
        e = d.pooled if isinstance(d, Comparison) else d
        if e is not None:
            out.append({"label": k, "delta": e.value, "ci_low": e.low, "ci_high": e.high})
    return pd.DataFrame(out, columns=["label", "delta", "ci_low", "ci_high"])


def part_ids(study: StudyData, factor: str, part: str) -> dict[str, str]:
    """Level of `factor` -> the id of `model.<part>` its runs are built with: what the level sets (`model.<part>`
    or `model.<part>.id`), else what the level's first run was built with."""
    out = {}
    for variant in study.variants:
        level = level_of(study, variant, factor)
        if level in out:
            continue
        sets = study.spec.factors[factor].levels.get(level, {})
        whole = sets.get(f"model.{part}")
        if isinstance(whole, dict) and "id" in whole:
            out[level] = str(whole["id"])
        elif f"model.{part}.id" in sets:
            out[level] = str(sets[f"model.{part}.id"])
        else:
            out[level] = str(read_yaml(study.run(variant, study.seeds[0]).config)["model"][part]["id"])
    return out


def apply_holm(claims: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Holm's step-down adjustment over the claims' primary p-values (those with a test); a decided verdict whose
    adjusted p is not below `alpha` becomes *inconclusive at this scale*, and its evidence says so."""
    from vlmlab.analysis.inference import holm

    claims = claims.copy()
    claims["p_holm"] = holm(claims["p"].tolist())
    tested = int(claims["p"].notna().sum())
    for i, row in claims.iterrows():
        adjusted = row["p_holm"]
        if row["verdict"] in DECIDED and np.isfinite(adjusted) and adjusted >= alpha and adjusted > row["p"]:
            claims.loc[i, "verdict"] = INCONCLUSIVE
            claims.loc[i, "evidence"] = (
                f"{row['evidence']} Its own test reads *{row['verdict']}* (p {row['p']:.3g}); after Holm's adjustment "
                f"over the {tested} primary tests of this report (adjusted p {adjusted:.3g}) that is not shown."
            )
    return claims
