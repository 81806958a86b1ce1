"""Study A's claims ("Back to the Barn with LLAMAs: Evolving Pretrained LLM Backbones in Finetuning VLMs",
arXiv 2604.10985), judged on a study whose factor swaps the LLM backbone (a ladder of `model.llm` levels, oldest
first), oldest vs newest level, each from the study's own per-item records. Every comparison pairs the same
questions, seeds and levels of other factors and resamples questions (`analysis.inference`). The rules:

- A1 "the newest does not win uniformly: it depends on the task" is a task × level interaction. Tasks where no
  compared variant beats chance take no part. Every pair of remaining tasks gets the interval of the difference
  of their deltas at the Bonferroni level 1 − 0.05/pairs. *Reproduced*: some pair's interval excludes 0 (the gain
  depends on the task) and the newest is not significantly better on every task, and every seed's own difference
  for that pair has the same sign. *Not reproduced*: the newest is significantly better on every task (a uniform
  win), or every pair's interval lies within ±margin (a uniform effect). Fewer than two tasks: *not tested*.
- A2 "it solves different questions rather than more" (see `claim_different`);
- A3 "it is better calibrated" and A4 "a capability (coordinates) appears only with it": `claims_llm_answers`;
- A5 "perception gains less than reasoning": the interval of (reasoning − perception) of the families' deltas
  (rows of each family's tasks); *reproduced* when it is above 0 and every seed's own gap is positive.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from vlmlab.analysis.chance import tasks_above_chance
from vlmlab.analysis.claims_llm_answers import claim_calibration, claim_coordinates
from vlmlab.analysis.inference import ALPHA, contrast, detectable_multiple, estimate, point, pooled_mean, sample
from vlmlab.analysis.paired import Paired, n_text, pair_levels, per_task
from vlmlab.analysis.verdicts import (
    INCONCLUSIVE,
    NO_PAIRS,
    NOT,
    REPRODUCED,
    SEEDS_DISAGREE,
    UNTESTED,
    claim,
    level_of,
    mde_text,
)
from vlmlab.study.data import StudyData

PAPER_A = "Back to the Barn with LLAMAs (arXiv 2604.10985)"


def ladder_factor(study: StudyData) -> str | None:
    """The factor that swaps the LLM backbone (declares a `model.llm` key), if any."""
    for name, factor in study.spec.factors.items():
        if any(k == "model.llm" or k.startswith("model.llm.id") or k == "model.llm.path" for k in factor.keys):
            return name
    return None


def oldest_and_newest(study: StudyData, factor: str) -> tuple[str, str]:
    """The variants at the factor's first (oldest) and last (newest) level that agree on every other factor."""
    levels = list(study.spec.factors[factor].levels)
    others = [f for f in study.spec.factors if f != factor]
    first = study.results.drop_duplicates("variant").set_index("variant")
    old = next(v for v in study.variants if first.loc[v, factor] == levels[0])
    same = (first[others] == first.loc[old, others]).all(axis=1) if others else pd.Series(True, index=first.index)
    new = next(v for v in study.variants if first.loc[v, factor] == levels[-1] and same[v])
    return old, new


def _claim(cid, text, verdict, evidence, analysis, figure=None, **numbers) -> dict:
    return claim(PAPER_A, cid, text, verdict, evidence, analysis, figure, **numbers)


def _seed_contrast(paired: Paired, plus: list[str], minus: list[str]) -> dict[int, float]:
    out = {}
    for seed, f in paired.seed_frames():
        s = Paired(f).sample()
        if set(plus + minus) <= set(s.strata):
            out[int(seed)] = point(s, contrast([s.strata.index(t) for t in plus], [s.strata.index(t) for t in minus]))
    return out


def claim_uniform(paired: Paired, taking: list[str], at_chance: dict, old: str, new: str, margin: float) -> dict:
    text = f"{new} does not win uniformly over {old}: it depends on the task"
    if paired.frame.empty:
        return _claim("A1", text, UNTESTED, NO_PAIRS, "factor-effects")
    skipped = "".join(f" {t} takes no part (at chance: {why})." for t, why in at_chance.items() if t in paired.tasks)
    tasks = [t for t in paired.tasks if t in taking]
    if len(tasks) < 2:
        why = "Fewer than two tasks where a compared variant beats chance: a task × level interaction needs two."
        return _claim("A1", text, UNTESTED, why + skipped, "factor-effects", seeds=paired.seeds)
    used = paired.only(tasks)
    s, deltas = used.sample(), per_task(used)
    pairs = list(itertools.combinations(tasks, 2))
    level = 1 - ALPHA / len(pairs)
    gaps = {
        (a, b): estimate(s, contrast([s.strata.index(a)], [s.strata.index(b)]), (0.0, -margin, margin), level)
        for a, b in pairs
    }
    wins_all = all(e.above(0) for e, _ in deltas.values())
    split = {k: e for k, e in gaps.items() if e.above(0) or e.below(0)}
    p_split = min(1.0, min(e.p_two(0) for e in gaps.values()) * len(pairs))
    p_wins = max(e.p_two(0) for e, _ in deltas.values())
    p_same = min(1.0, max(2 * max(e.p_above[-margin], e.p_below[margin]) for e in gaps.values()) * len(pairs))
    deciding = min(gaps, key=lambda k: gaps[k].p_two(0))
    seeds = _seed_contrast(used, [deciding[0]], [deciding[1]])
    if wins_all:
        agree = all(all(d > 0 for d in sd.values()) for _, sd in deltas.values())
        verdict, p, why = (NOT if agree else SEEDS_DISAGREE), p_wins, f"{new} is better on every task"
    elif split:
        agree = all(np.sign(d) == np.sign(gaps[deciding].value) for d in seeds.values())
        verdict, p, why = (REPRODUCED if agree else SEEDS_DISAGREE), p_split, "the gain depends on the task"
    elif all(-margin < e.low and e.high < margin for e in gaps.values()):
        verdict, p, why = NOT, p_same, f"every pair of tasks differs by less than ±{margin:.2f}: a uniform effect"
    else:
        verdict, p, why = INCONCLUSIVE, min(p_split, p_wins, p_same), "no pair of tasks differs detectably"
    g = gaps[deciding]
    evidence = (
        "; ".join(f"{t} {e.text()}" for t, (e, _) in deltas.items())
        + f" ({n_text(used.questions, used.seeds)}). Deciding task difference {deciding[0]} − {deciding[1]} "
        f"{g.text()} at {level:.1%}"
        + (f" (Bonferroni over {len(pairs)} pairs of tasks)" if len(pairs) > 1 else "")
        + (", per seed " + ", ".join(f"{d:+.3f}" for d in seeds.values()) if len(seeds) > 1 else "")
        + f": {why}."
        + skipped
        + (f" {used.lost_text()}." if used.lost_text() else "")
    )
    figure = pd.DataFrame(
        [{"task": t, "delta": e.value, "ci_low": e.low, "ci_high": e.high} for t, (e, _) in deltas.items()]
    )
    numbers = {
        "seeds": used.seeds,
        "questions": used.questions,
        "estimate": f"{deciding[0]} − {deciding[1]} {g.text()}",
        "mde": f"task difference ±{detectable_multiple(ALPHA / len(pairs)) * g.se:.3f}",
        "p": p,
    }
    return _claim("A1", text, verdict, evidence, "factor-effects", figure, **numbers)


def _phi(totals: np.ndarray) -> np.ndarray:
    """φ of correctness per task (from its 2×2 counts), combined weighted by the task's rows: (...,)."""
    rows, both, only_old, only_new, neither = (totals[..., i] for i in (0, 2, 3, 4, 5))
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = np.sqrt((both + only_old) * (only_new + neither) * (both + only_new) * (only_old + neither))
        phi = (both * neither - only_old * only_new) / denom
        ok = np.isfinite(phi)
        return np.where(ok, phi * rows, 0).sum(-1) / np.where(ok, rows, 0).sum(-1)


def claim_different(study, factor, old_level, new_level, old, new, taking: list[str], margin: float) -> dict:
    """A2 "solves different questions rather than more". *Reproduced*: the net gain (share correct, newest − oldest)
    lies within ±margin (an equivalence interval: "not more") and the combined φ of correctness — per task, then
    averaged weighted by rows, never one 2×2 table pooled over tasks of different difficulty — has its interval
    below 0 (the paper's negative correlation), with every seed's own φ negative. *Not reproduced*: the net gain's
    interval excludes 0 (it solves more, or fewer), or φ's interval is above 0 (largely the same questions).
    A net gain that is neither shown equal nor different is *inconclusive*, never read as "not more"."""
    text = f"{new} solves different questions rather than more"
    paired = pair_levels(study, factor, new_level, old_level, column="correct")
    paired = paired.only([t for t in paired.tasks if t in taking])
    if paired.frame.empty:
        return _claim("A2", text, UNTESTED, NO_PAIRS + " (or no task above chance)", "overlap")
    f = paired.frame
    a, b = f["value_ref"], f["value_level"]
    frame = f.assign(both=a * b, only_old=a * (1 - b), only_new=(1 - a) * b, neither=(1 - a) * (1 - b))
    cols = ["one", "diff", "both", "only_old", "only_new", "neither"]
    s = sample(frame, cols)
    net = estimate(s, pooled_mean, (0.0, -margin, margin))
    phi = estimate(s, _phi)
    tasks = {t: estimate(s.only([t]), _phi) for t in s.strata} if len(s.strata) > 1 else {}
    seeds = {int(k): point(sample(g, cols), _phi) for k, g in frame.groupby("seed", sort=True)}
    p_more = net.p_two(0)
    p_same = max(2 * max(net.p_above[-margin], net.p_below[margin]), phi.p_two(0))
    if net.above(0) or net.below(0):
        verdict, p, why = NOT, p_more, f"{new} solves {'more' if net.value > 0 else 'fewer'} questions"
    elif phi.above(0):
        verdict, p, why = NOT, phi.p_two(0), "correctness correlates positively: largely the same questions"
    elif -margin < net.low and net.high < margin and phi.below(0):
        agree = all(v < 0 for v in seeds.values())
        verdict, p, why = (REPRODUCED if agree else SEEDS_DISAGREE), p_same, "as many, and different, questions"
    else:
        verdict, p = INCONCLUSIVE, min(p_more, p_same)
        why = f"the net gain is neither shown within ±{margin:.2f} nor different from 0, or φ is not resolved"
    counts = {c: int(frame[c].sum()) for c in ("only_old", "only_new", "both", "neither")}
    evidence = (
        f"only {old} {counts['only_old']}, only {new} {counts['only_new']}, both {counts['both']}, neither "
        f"{counts['neither']} ({n_text(paired.questions, paired.seeds)}, tasks {', '.join(s.strata)}); net gain "
        f"{net.text()} (equivalence margin ±{margin:.2f}); φ {phi.text()} combined over tasks"
        + ("; per task " + ", ".join(f"{t} {e.text()}" for t, e in tasks.items()) if tasks else "")
        + (", per seed φ " + ", ".join(f"{v:+.3f}" for v in seeds.values()) if len(seeds) > 1 else "")
        + f": {why}."
    )
    figure = pd.DataFrame(
        {
            "group": [f"only {old}", "both", f"only {new}"],
            "items": [counts["only_old"], counts["both"], counts["only_new"]],
        }
    )
    numbers = {
        "seeds": paired.seeds,
        "questions": paired.questions,
        "estimate": f"φ {phi.text()}; net {net.text()}",
        "mde": f"φ ±{phi.mde():.3f}; net ±{net.mde():.3f}",
        "p": p,
    }
    return _claim("A2", text, verdict, evidence, "overlap", figure, **numbers)


def claim_perception(paired: Paired, new: str) -> dict:
    text = f"perception gains less than reasoning from {new}"
    family = {t: "perception" if "percep" in t else "reasoning" if "reason" in t else None for t in paired.tasks}
    perception = [t for t, f in family.items() if f == "perception"]
    reasoning = [t for t, f in family.items() if f == "reasoning"]
    if not perception or not reasoning:
        why = "The study has no separate perception and reasoning tasks that pair up."
        return _claim("A5", text, UNTESTED, why, "factor-effects")
    used = paired.only(perception + reasoning)
    s = used.sample()
    idx = {t: s.strata.index(t) for t in perception + reasoning}
    gap = estimate(s, contrast([idx[t] for t in reasoning], [idx[t] for t in perception]))
    fam = {
        name: estimate(s, contrast([idx[t] for t in ts], []))
        for name, ts in (("perception", perception), ("reasoning", reasoning))
    }
    seeds = _seed_contrast(used, reasoning, perception)
    if gap.above(0) or gap.below(0):
        agree = all(np.sign(d) == np.sign(gap.value) for d in seeds.values())
        verdict = (REPRODUCED if gap.above(0) else NOT) if agree else SEEDS_DISAGREE
    else:
        verdict = INCONCLUSIVE
    evidence = (
        f"perception {fam['perception'].text()}, reasoning {fam['reasoning'].text()}; reasoning − perception "
        f"{gap.text()} ({n_text(used.questions, used.seeds)}"
        + (", per seed " + ", ".join(f"{d:+.3f}" for d in seeds.values()) if len(seeds) > 1 else "")
        + ")."
    )
    figure = pd.DataFrame(
        {"family": ["perception", "reasoning"], "delta": [fam[k].value for k in ("perception", "reasoning")]}
    )
    numbers = {"seeds": used.seeds, "questions": used.questions, "estimate": gap.text(), "mde": mde_text(gap)}
    return _claim("A5", text, verdict, evidence, "factor-effects", figure, p=gap.p_two(0), **numbers)


def judge(study: StudyData, params) -> tuple[str, list[dict]] | None:
    """Study A's claims on the ladder's oldest vs newest rung; None when no factor swaps the LLM backbone."""
    factor = ladder_factor(study)
    if factor is None:
        return None
    old, new = oldest_and_newest(study, factor)
    if old == new:  # one rung trained (e.g. the others are external answers): no ladder to judge
        return None
    old_level, new_level = level_of(study, old, factor), level_of(study, new, factor)
    compared = list(dict.fromkeys(study.results.loc[study.results[factor].isin([old_level, new_level]), "variant"]))
    taking, at_chance = tasks_above_chance(study.results, compared)
    paired = pair_levels(study, factor, new_level, old_level)
    claims = [
        claim_uniform(paired, taking, at_chance, old, new, params.margin),
        claim_different(study, factor, old_level, new_level, old, new, taking, params.margin),
        claim_calibration(study, factor, old_level, new_level, old, new, params.n_bins),
        claim_coordinates(study, old, new, params.near),
        claim_perception(paired, new),
        _claim(
            "A3b",
            f"{new} has more stable internal representations",
            UNTESTED,
            "The representations section reports linear CKA per rung (clean vs perturbed, seed vs seed). Across "
            "rungs it is confounded by the chat template unless the study also crosses `model.llm.template` "
            "(native vs vicuna); this section does not judge it.",
            "representations",
        ),
    ]
    return f"factor `{factor}` swaps the LLM backbone: {old} (oldest) vs {new} (newest)", claims
