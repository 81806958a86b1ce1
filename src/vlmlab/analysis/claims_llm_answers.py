"""Study A's claims about the answers themselves: A3 the newest is better calibrated, A4 a capability (coordinate
output) appears only with it. Rules:

- A3: the debiased squared calibration error over equal-mass bins (`calibration_error`), per task then combined
  weighted by answers, on the answers both rungs gave with a confidence; the interval of CE²(newest) − CE²(oldest)
  resamples questions. *Reproduced*: the interval is below 0 and every seed's own difference is negative; *not
  reproduced*: above 0. No confidence recorded (NaN, e.g. an external predictions file without one): *not tested*.
- A4: on each box-output task, an exact one-sided binomial test of the newest's Acc@0.5 against chance (random
  boxes, or the best blind accuracy if higher) in every seed on its own (one answer per question, so the
  answers are independent), and the oldest's exact 95% upper bound within chance + `near`. *Reproduced*: on some
  box task (Bonferroni over box tasks) both hold in every seed; *not reproduced*: on every box task the oldest is
  also above chance, or the newest stays within chance + `near` (the capability is absent); *seeds disagree*:
  the rule holds in some seeds only. No box task: *not tested*.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from vlmlab.analysis import calibration_error as ce
from vlmlab.analysis.chance import chance_by_task
from vlmlab.analysis.collapse import box_tasks
from vlmlab.analysis.inference import ALPHA, binomial_above, binomial_mde, binomial_upper, estimate, point
from vlmlab.analysis.paired import n_text, pair_rows
from vlmlab.analysis.verdicts import INCONCLUSIVE, NOT, REPRODUCED, SEEDS_DISAGREE, UNTESTED, claim, mde_text

PAPER_A = "Back to the Barn with LLAMAs (arXiv 2604.10985)"


def _claim(cid, text, verdict, evidence, analysis, figure=None, **numbers) -> dict:
    return claim(PAPER_A, cid, text, verdict, evidence, analysis, figure, **numbers)


def claim_calibration(study, factor, old_level, new_level, old, new, n_bins: int = 15) -> dict:
    text = f"{new} is better calibrated than {old}"
    rows, unpaired = pair_rows(study, factor, new_level, old_level, ["confidence", "correct"])
    if rows.empty:
        return _claim("A3", text, UNTESTED, "No item pairs up between the two rungs.", "calibration")
    ok = rows[["confidence_ref", "confidence_level", "correct_ref", "correct_level"]].notna().all(axis=1)
    missing = {who: int(rows[f"confidence_{side}"].isna().sum()) for who, side in ((old, "ref"), (new, "level"))}
    if not ok.any():
        lacking = " and ".join(w for w, k in missing.items() if k == len(rows)) or "either rung"
        why = (
            f"No confidence recorded for {lacking} (missing, NaN: e.g. predictions from a file without "
            "confidences), so calibration cannot be measured."
        )
        return _claim("A3", text, UNTESTED, why, "calibration", seeds=int(rows["seed"].nunique()))
    used = rows[ok]
    lost_tasks = sorted(set(rows["task"]) - set(used["task"]))
    s = ce.ce_sample(used, ["confidence_ref", "confidence_level"], ["correct_ref", "correct_level"], n_bins)
    diff = estimate(s, ce.difference(n_bins))
    seeds = {
        int(k): point(
            ce.ce_sample(g, ["confidence_ref", "confidence_level"], ["correct_ref", "correct_level"], n_bins),
            ce.difference(n_bins),
        )
        for k, g in used.groupby("seed", sort=True)
    }
    if diff.below(0) or diff.above(0):
        agree = all(np.sign(d) == np.sign(diff.value) for d in seeds.values())
        verdict = (REPRODUCED if diff.below(0) else NOT) if agree else SEEDS_DISAGREE
    else:
        verdict = INCONCLUSIVE
    per_task = []
    for task in s.strata:
        totals = s.only([task]).totals()[None]
        first, second = (float(ce.combined(totals, n_bins, m)[0]) for m in (0, 1))
        per_task.append({"task": task, "ce_first": ce.rms(first), "ce_second": ce.rms(second)})
    brier = {
        side: float(((used[f"confidence_{side}"] - used[f"correct_{side}"].astype(float)) ** 2).mean())
        for side in ("ref", "level")
    }
    questions = int(used.groupby(["task", "item_id"]).ngroups)
    dropped = int((~ok).sum())
    evidence = (
        "; ".join(f"{r['task']} CE {r['ce_first']:.3f} → {r['ce_second']:.3f}" for r in per_task)
        + f"; CE² newest − oldest {diff.text()} combined over tasks ({n_text(questions, used['seed'].nunique())}, "
        f"debiased, equal-mass bins); Brier {brier['ref']:.3f} → {brier['level']:.3f}"
        + (", per seed ΔCE² " + ", ".join(f"{d:+.4f}" for d in seeds.values()) if len(seeds) > 1 else "")
        + "."
        + (
            f" {dropped} answer pairs without a confidence left out ({', '.join(f'{k} {v}' for k, v in missing.items())})."
            if dropped
            else ""
        )
        + (f" No confidence at all on {', '.join(lost_tasks)}." if lost_tasks else "")
        + (f" {unpaired} rows without a partner." if unpaired else "")
    )
    numbers = {
        "seeds": int(used["seed"].nunique()),
        "questions": questions,
        "estimate": f"ΔCE² {diff.text()}",
        "mde": "ΔCE² " + mde_text(diff),
        "p": diff.p_two(0),
    }
    return _claim("A3", text, verdict, evidence, "calibration", pd.DataFrame(per_task), **numbers)


def _counts(records: pd.DataFrame, variant: str, task: str) -> dict[int, tuple[int, int, int]]:
    """{seed: (hits, answered questions, questions with a missing score)} of one variant on a box task."""
    rows = records[(records["mode"] == "clean") & (records["variant"] == variant) & (records["task"] == task)]
    out = {}
    for seed, f in rows.groupby("seed", sort=True):
        scored = f["score"].notna()
        out[int(seed)] = (int((f.loc[scored, "score"] >= 1).sum()), int(scored.sum()), int((~scored).sum()))
    return out


def _p_below(k: int, n: int, bound: float) -> float:
    return float(binomtest(k, n, min(bound, 1 - 1e-12), "less").pvalue) if n and bound < 1 else 1.0


def claim_coordinates(study, old: str, new: str, near: float) -> dict:
    text = f"some capability (coordinate output) appears only with {new}"
    boxes = box_tasks(study.results)
    if not boxes:
        return _claim("A4", text, UNTESTED, "The study has no box-output task.", "exclusive-capabilities")
    chance = chance_by_task(study.results)
    rows, tasks_p_repro, tasks_p_not, shown, figure, mdes, holds = [], [], [], [], [], [], {}
    questions, seeds_used, reasons = 0, set(), {}
    for task in boxes:
        level, source = chance[task]
        c_old, c_new = _counts(study.results, old, task), _counts(study.results, new, task)
        seeds = sorted(set(c_old) & set(c_new))
        seeds_used |= set(seeds)
        questions += max((c_new[k][1] for k in seeds), default=0)
        per_seed = []
        for seed in seeds:
            (ko, no, mo), (kn, nn, mn) = c_old[seed], c_new[seed]
            r = {
                "seed": seed,
                "p_new": binomial_above(kn, nn, level),
                "p_old": binomial_above(ko, no, level),
                "old_upper": binomial_upper(ko, no),
                "new_upper": binomial_upper(kn, nn),
                "p_old_near": _p_below(ko, no, level + near),
                "p_new_near": _p_below(kn, nn, level + near),
            }
            r["holds"] = r["p_new"] < ALPHA / 2 / len(boxes) and r["old_upper"] <= level + near
            per_seed.append(r)
            shown.append(
                f"{task} seed {seed}: {new} {kn}/{nn} (exact p {r['p_new']:.2g} vs chance), {old} {ko}/{no} "
                f"(95% upper {r['old_upper']:.3f})" + (f", {mo + mn} answers without a score" if mo + mn else "")
            )
            mdes.append(binomial_mde(nn, level, ALPHA / 2 / len(boxes)))
        holds[task] = [r["holds"] for r in per_seed]
        if per_seed:
            tasks_p_repro.append(max(max(r["p_new"] * len(boxes), r["p_old_near"]) for r in per_seed))
            old_above = max(r["p_old"] for r in per_seed)
            new_absent = max(r["p_new_near"] for r in per_seed)
            tasks_p_not.append(min(old_above, new_absent) * 2)
            reasons[task] = (
                f"{old} is also above chance" if old_above < new_absent else f"{new} stays within chance + {near:.2f}"
            )
        for who, counts in ((old, c_old), (new, c_new)):
            k, n = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
            figure.append({"label": f"{who}\n{task}", "acc": k / n if n else np.nan, "chance": level, "n": n})
        rows.append(f"{task}: chance {level:.3f} ({source})")
    if not shown:
        return _claim("A4", text, UNTESTED, "No seed has both rungs on a box task.", "exclusive-capabilities")
    p_repro = min(1.0, 2 * min(tasks_p_repro))
    p_not = min(1.0, 2 * max(tasks_p_not))
    if any(h and all(h) for h in holds.values()):
        verdict, p = REPRODUCED, p_repro
        why = f"{new} draws boxes above chance while {old} stays within chance + {near:.2f}"
    elif any(any(h) for h in holds.values()):
        verdict, p, why = SEEDS_DISAGREE, p_repro, "the rule holds in some seeds only"
    elif p_not < ALPHA:
        verdict, p = NOT, p_not
        why = "; ".join(f"{t}: {r}" for t, r in reasons.items()) + f": not a capability only {new} has"
    else:
        verdict, p, why = INCONCLUSIVE, min(p_repro, p_not), "neither shown"
    evidence = "; ".join(rows) + ". " + "; ".join(shown) + f". Exact one-sided binomial tests per seed: {why}."
    numbers = {
        "seeds": len(seeds_used),
        "questions": questions,
        "estimate": "; ".join(f"{f['label'].replace(chr(10), ' ')} {f['acc']:.3f}" for f in figure),
        "mde": f"Acc@0.5 ≥ chance + {max(mdes):.3f}",
        "p": p,
    }
    return _claim("A4", text, verdict, evidence, "exclusive-capabilities", pd.DataFrame(figure), **numbers)
