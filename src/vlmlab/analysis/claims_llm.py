"""Study A's claims ("Back to the Barn with LLAMAs: Evolving Pretrained LLM Backbones in Finetuning VLMs",
arXiv 2604.10985), judged on a study whose factor swaps the LLM backbone (a ladder of `model.llm` levels, oldest
first), on the oldest vs the newest level, each from the study's own per-item records:

- A1 the newest does not win uniformly (factor-effects per task);
- A2 it solves different questions rather than more (overlap: McNemar, churn, phi);
- A3 it is better calibrated (calibration: ECE difference with a paired bootstrap interval);
- A4 a capability appears only with it, e.g. coordinates (exclusive-capabilities, against chance);
- A5 perception gains less than reasoning (the two families' deltas and the interval of their difference).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vlmlab.analysis.calibration import ece_pairs
from vlmlab.analysis.exclusive import exclusive_table
from vlmlab.analysis.factor_effects import level_deltas, paired_scores
from vlmlab.analysis.overlap import correctness, pair_stats
from vlmlab.analysis.verdicts import INCONCLUSIVE, NOT, REPRODUCED, UNTESTED, claim, level_of, seed_note
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


def claim_uniform(study: StudyData, factor: str, old: str, new: str, level: str) -> dict:
    deltas = level_deltas(study, factor)
    deltas = deltas[deltas["level"] == level]
    per_seed = level_deltas(study, factor, per_seed=True)
    per_seed = per_seed[per_seed["level"] == level]
    wins = deltas["verdict"] == "helps"
    seeds = len(study.seeds)
    agree = sum(bool(((f["verdict"] == "helps").all()) == wins.all()) for _, f in per_seed.groupby("seed", sort=True))
    if wins.all():
        verdict = NOT
    elif wins.any() or (deltas["verdict"] == "hurts").any():
        verdict = REPRODUCED if seeds < 2 or agree == seeds else INCONCLUSIVE
    else:
        verdict = INCONCLUSIVE
    evidence = "; ".join(
        f"{r['task']} {r['delta']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] {r['verdict']}"
        for _, r in deltas.iterrows()
    )
    return _claim(
        "A1",
        f"{new} does not win uniformly over {old}: it depends on the task",
        verdict,
        evidence + "." + seed_note(seeds, agree),
        "factor-effects",
        deltas[["task", "delta", "ci_low", "ci_high"]],
    )


def claim_different(study: StudyData, old: str, new: str) -> dict:
    wide = correctness(study.results)
    s = pair_stats(wide[old].to_numpy(), wide[new].to_numpy())
    if "more" in s["verdict"] or "fewer" in s["verdict"]:
        verdict = NOT
    elif "different" in s["verdict"]:  # the paper also finds the two correctness vectors negatively correlated
        verdict = REPRODUCED if s["phi"] <= 0 else INCONCLUSIVE
    else:
        verdict = INCONCLUSIVE
    evidence = (
        f"only {old} {s['only_a']}, only {new} {s['only_b']}, both {s['both']}, neither {s['neither']} of {s['n']} "
        f"items × seeds; churn {s['churn']:.3f}, net gain {s['net_gain']:+.3f}, McNemar p {s['mcnemar_p']:.3g}, "
        f"φ {s['phi']:+.3f} ({s['verdict']})"
        + (
            "; the items change hands, but correctness correlates positively where the paper reports a negative "
            "correlation."
            if "different" in s["verdict"] and s["phi"] > 0
            else "."
        )
        + seed_note(len(study.seeds))
    )
    figure = pd.DataFrame(
        {"group": [f"only {old}", "both", f"only {new}"], "items": [s["only_a"], s["both"], s["only_b"]]}
    )
    return _claim("A2", f"{new} solves different questions rather than more", verdict, evidence, "overlap", figure)


def claim_calibration(study: StudyData, old: str, new: str) -> dict:
    clean = study.results[study.results["mode"] == "clean"]
    pairs = ece_pairs(clean, [old, new], 15)
    better = pairs["verdict"] == "second better calibrated"
    worse = pairs["verdict"] == "first better calibrated"
    seeds_ok = (pairs["seeds_same_sign"] == pairs["seeds"]).all()
    if worse.any():
        verdict = NOT
    elif better.any() and seeds_ok:
        verdict = REPRODUCED
    else:
        verdict = INCONCLUSIVE
    evidence = "; ".join(
        f"{r['task']} ECE {r['ece_first']:.3f} → {r['ece_second']:.3f} (newest − oldest {-r['difference']:+.3f} "
        f"[{-r['ci_high']:+.3f}, {-r['ci_low']:+.3f}])"
        for _, r in pairs.iterrows()
    )
    figure = pairs[["task", "ece_first", "ece_second"]]
    return _claim(
        "A3",
        f"{new} is better calibrated than {old}",
        verdict,
        evidence + "." + seed_note(len(study.seeds)),
        "calibration",
        figure,
    )


def claim_exclusive(study: StudyData, new: str) -> dict:
    table = exclusive_table(study.results, "category", 0.20, 0.05)
    boxes = table[table["category"].astype(str).str.contains("ground")]
    mine = table[table["exclusive_to"] == new]
    if len(mine):
        verdict = REPRODUCED
    elif boxes.empty:
        return _claim(
            "A4",
            f"some capability (e.g. coordinates) appears only with {new}",
            UNTESTED,
            "The study has no box-output task.",
            "exclusive-capabilities",
            None,
        )
    elif (boxes[[v for v in study.variants if v in boxes]].max(axis=1) <= boxes["chance"] + 0.05).all():
        verdict = INCONCLUSIVE
    else:
        verdict = NOT
    shown = boxes if len(boxes) else mine
    evidence = "; ".join(
        f"{r['task']}/{r['category']}: "
        + ", ".join(f"{v} {r[v]:.3f}" for v in study.variants if v in r)
        + f" (chance {r['chance']:.3f})"
        for _, r in shown.iterrows()
    )
    if verdict == INCONCLUSIVE:
        evidence += ". No variant learns boxes above chance, so the claim cannot be tested at this scale."
    return _claim(
        "A4",
        f"some capability (e.g. coordinates) appears only with {new}",
        verdict,
        evidence,
        "exclusive-capabilities",
        None,
    )


def claim_perception(study: StudyData, factor: str, new: str, level: str, samples: int = 1000) -> dict:
    paired = paired_scores(study, factor, level).rename(columns={"score_level": "score_new"})
    family = {t: "perception" if "percep" in t else "reasoning" if "reason" in t else None for t in paired["task"]}
    if not {"perception", "reasoning"} <= set(family.values()):
        return _claim(
            "A5",
            "perception gains less from a newer LLM than reasoning",
            UNTESTED,
            "The study has no separate perception and reasoning tasks.",
            "factor-effects",
            None,
        )
    paired["family"] = paired["task"].map(family)
    rng = np.random.default_rng(0)
    diffs = {}
    for fam in ("perception", "reasoning"):
        d = (paired[paired["family"] == fam]["score_new"] - paired[paired["family"] == fam]["score_ref"]).to_numpy()
        diffs[fam] = (d.mean(), d[rng.integers(0, len(d), (samples, len(d)))].mean(1))
    gap = diffs["reasoning"][1] - diffs["perception"][1]
    point = diffs["reasoning"][0] - diffs["perception"][0]
    low, high = np.percentile(gap, [2.5, 97.5])
    per_seed = []
    for _, f in paired.groupby("seed", sort=True):
        by = f.assign(d=f["score_new"] - f["score_ref"]).groupby("family")["d"].mean()
        per_seed.append(by.get("reasoning", np.nan) - by.get("perception", np.nan))
    agree = int(sum(np.sign(g) == np.sign(point) for g in per_seed))
    seeds = len(per_seed)
    if low > 0:
        verdict = REPRODUCED if agree == seeds else INCONCLUSIVE
    elif high < 0:
        verdict = NOT if agree == seeds else INCONCLUSIVE
    else:
        verdict = INCONCLUSIVE
    evidence = (
        f"perception {diffs['perception'][0]:+.3f}, reasoning {diffs['reasoning'][0]:+.3f}; reasoning − perception "
        f"{point:+.3f} [{low:+.3f}, {high:+.3f}] (bootstrap over items of each family)" + "." + seed_note(seeds, agree)
    )
    figure = pd.DataFrame(
        {"family": ["perception", "reasoning"], "delta": [diffs["perception"][0], diffs["reasoning"][0]]}
    )
    return _claim("A5", f"perception gains less than reasoning from {new}", verdict, evidence, "factor-effects", figure)


def _claim(cid, text, verdict, evidence, analysis, figure) -> dict:
    return claim(PAPER_A, cid, text, verdict, evidence, analysis, figure)


def judge(study: StudyData, params) -> tuple[str, list[dict]] | None:
    """Study A's claims on the ladder's oldest vs newest rung; None when no factor swaps the LLM backbone."""
    factor = ladder_factor(study)
    if factor is None:
        return None
    old, new = oldest_and_newest(study, factor)
    if old == new:  # one rung trained (e.g. the others are external answers): no ladder to judge
        return None
    new_level = level_of(study, new, factor)
    claims = [
        claim_uniform(study, factor, old, new, new_level),
        claim_different(study, old, new),
        claim_calibration(study, old, new),
        claim_exclusive(study, new),
        claim_perception(study, factor, new, new_level),
        _claim(
            "A3b",
            f"{new} has more stable internal representations",
            UNTESTED,
            "The representations section reports linear CKA per rung (clean vs perturbed, seed vs seed). Across "
            "rungs it is confounded by the chat template unless the study also crosses `model.llm.template` "
            "(native vs vicuna); this section does not judge it.",
            "representations",
            None,
        ),
    ]
    return f"factor `{factor}` swaps the LLM backbone: {old} (oldest) vs {new} (newest)", claims
