"""Study B's claims ("Do VLMs Need Vision Transformers? Evaluating State Space Models as Vision Encoders",
arXiv 2603.19209), judged on a study whose factor swaps the vision tower, against the ViT level, from the records.
Each comparison pairs the same questions, seeds and levels of every other factor and resamples questions. Rules:

- B1 a state-space tower (VMamba first, else the first SSM level) localizes better than the ViT: superiority of
  Acc@0.5 on the box tasks pooled (interval above 0, every seed's own delta positive); *inconclusive* when every
  run is at or below random boxes (nothing is localized at this scale).
- B2 it matches or beats the ViT on VQA: non-inferiority **per task** (each non-box task's interval above
  −margin, and every seed's own delta): every task must pass; a task missing for a tower is named (*missing data*).
- B3 the tower's pretraining accuracy does not predict the VLM: towers at least `min_top1_gap` apart in pretraining
  top-1 form ordered pairs; each pair's VLM delta (better-pretrained − other) gets an interval at the Bonferroni
  level over the pairs. *Reproduced*: some pair is significantly reversed, with every seed's own delta negative,
  and reversed pairs are at least as many as significantly ordered ones; *not reproduced*: every pair is
  significantly in pretraining's order; *seeds disagree*: a reversed pair some seed does not show; *not tested*
  when no two towers are `min_top1_gap` apart (pretraining orders none of them).
- B4 detection-style (dense) pretraining improves localization: superiority, dense − classify on box tasks.
- B5 the 3-layer connector with square letterbox input removes localization collapse: fewer collapsed matched
  runs with the stable interface and Acc@0.5 superiority (stable − plain); *inconclusive* when no plain run
  collapses (nothing to remove).
"""

from __future__ import annotations

import pandas as pd

from vlmlab.analysis.collapse import box_tasks, collapse_table
from vlmlab.analysis.inference import ALPHA, detectable_multiple
from vlmlab.analysis.paired import compare, pair_levels
from vlmlab.analysis.verdicts import (
    INCONCLUSIVE,
    NO_PAIRS,
    NOT,
    REPRODUCED,
    SEEDS_DISAGREE,
    UNTESTED,
    claim,
    delta_frame,
    factor_declaring,
    mde_text,
    non_inferiority,
    part_ids,
    superiority,
)
from vlmlab.analysis.vision_pretraining import pretraining_table
from vlmlab.study.data import StudyData

PAPER_B = "Do VLMs Need Vision Transformers? (arXiv 2603.19209)"
SSM_TOWERS = ("vmamba", "vim")
STABILIZERS = {"model.projector.id": "fused-gelu-mlp", "data.image.geometry": "letterbox-square"}


def factor_with_suffix(study: StudyData, suffix: str) -> str | None:
    for name, factor in study.spec.factors.items():
        if any(k.endswith(suffix) for k in factor.keys):
            return name
    return None


def _claim(cid, text, verdict, evidence, analysis, figure=None, **numbers) -> dict:
    return claim(PAPER_B, cid, text, verdict, evidence, analysis, figure, **numbers)


def _numbers(c) -> dict:
    """A comparison's n, estimate, MDE and p for the claim record."""
    e = c.pooled
    return {"seeds": c.paired.seeds, "questions": c.paired.questions, "estimate": e.text(), "mde": mde_text(e)}


def _only(study: StudyData, levels: dict[str, str]) -> StudyData:
    """The study restricted to the records at these levels of other factors ({factor: level})."""
    keep = pd.Series(True, index=study.results.index)
    for factor, level in levels.items():
        keep &= study.results[factor] == level
    return StudyData(study.path, study.spec, study.control, study.results[keep], study.summary)


def _all_collapsed(study: StudyData) -> bool:
    table = collapse_table(study.results)
    return not table.empty and bool(table["collapsed"].all())


def claim_localization(study, factor, vit, ssm, boxes) -> dict:
    text = f"a state-space tower ({ssm}) localizes better than the ViT ({vit})"
    if not boxes:
        return _claim("B1", text, UNTESTED, "The study has no box-output task.", "factor-effects")
    deltas = {
        lv: compare(pair_levels(study, factor, lv, vit, tasks=boxes))
        for lv in study.spec.factors[factor].levels
        if lv != vit
    }
    d = deltas[ssm]
    if d is None:
        return _claim("B1", text, UNTESTED, NO_PAIRS, "factor-effects")
    verdict, p = superiority(d)
    evidence = "Acc@0.5, " + "; ".join(f"{lv} − {vit} {x.text()}" for lv, x in deltas.items() if x)
    evidence += "."
    if _all_collapsed(study):
        verdict = INCONCLUSIVE
        evidence += " Every run is at or below random boxes, so localization cannot be compared at this scale."
    lost = d.paired.lost_text()
    evidence += f" {lost}." if lost else ""
    return _claim("B1", text, verdict, evidence, "factor-effects", delta_frame(deltas), p=p, **_numbers(d))


def claim_vqa(study, factor, vit, ssm, vqa, margin) -> dict:
    text = f"{ssm} matches or beats the ViT on VQA, task by task (within {margin:.2f})"
    if not vqa:
        return _claim("B2", text, UNTESTED, "The study has no task other than boxes.", "factor-effects")
    paired = pair_levels(study, factor, ssm, vit, tasks=vqa)
    if paired.frame.empty:
        return _claim("B2", text, UNTESTED, NO_PAIRS, "factor-effects")
    r = non_inferiority(paired, margin)
    evidence = f"accuracy {ssm} − {vit} per task: {r['evidence']}; non-inferiority margin −{margin:.2f}."
    lost = paired.lost_text()
    evidence += f" {lost}." if lost else ""
    figure = delta_frame({t: e for t, (e, _) in r["tasks"].items()}).assign(margin=margin)
    numbers = {"seeds": paired.seeds, "questions": paired.questions, "mde": r["mde"], "p": r["p"]}
    worst = min(r["tasks"].items(), key=lambda kv: kv[1][0].low)
    numbers["estimate"] = f"lowest task {worst[0]} {worst[1][0].text()}"
    return _claim("B2", text, r["verdict"], evidence, "factor-effects", figure, **numbers)


def claim_pretraining(study, factor, min_gap) -> dict:
    text = "the tower's pretraining accuracy does not predict the VLM's quality"
    # towers compared at the first level of every other factor: top-1 of one objective is comparable (classify and
    # dense heads are not), and the VLM deltas pair those same runs only
    study = _only(study, {f: list(lv.levels)[0] for f, lv in study.spec.factors.items() if f != factor})
    table = pretraining_table(study)
    levels = study.results.drop_duplicates("variant").set_index("variant")
    table["level"] = table["variant"].map(levels[factor])
    top1 = table.groupby("level")["pretrain_top1"].mean().dropna()
    if len(top1) < 2:
        why = "Fewer than two towers report a pretraining accuracy."
        return _claim("B3", text, UNTESTED, why, "vision-pretraining")
    names = list(top1.index)
    ordered = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            hi, lo = (a, b) if top1[a] >= top1[b] else (b, a)
            if top1[hi] - top1[lo] >= min_gap:  # pretraining orders these two
                ordered.append((hi, lo))
    if not ordered:
        why = (
            f"No two towers differ by {min_gap:.3f} or more in pretraining top-1 ("
            + ", ".join(f"{lv} {v:.3f}" for lv, v in top1.items())
            + "), so pretraining orders none of them."
        )
        return _claim("B3", text, UNTESTED, why, "vision-pretraining")
    level = 1 - ALPHA / len(ordered)
    found = {(hi, lo): compare(pair_levels(study, factor, hi, lo), level=level) for hi, lo in ordered}
    found = {k: c for k, c in found.items() if c is not None}
    if not found:
        return _claim("B3", text, UNTESTED, NO_PAIRS, "vision-pretraining")
    reversed_ = {k: c for k, c in found.items() if c.pooled.below(0)}
    clean = {k: c for k, c in reversed_.items() if c.seeds_agree(-1)}
    concordant = {k: c for k, c in found.items() if c.pooled.above(0)}
    k = len(found)
    p_rev = min(1.0, min(c.pooled.p_two(0) for c in found.values()) * k)
    p_con = min(1.0, max(c.pooled.p_two(0) for c in found.values()) * k)
    if clean and len(reversed_) >= len(concordant):
        verdict, p = REPRODUCED, p_rev
    elif reversed_ and len(reversed_) >= len(concordant):
        verdict, p = SEEDS_DISAGREE, p_rev
    elif len(concordant) == k and all(c.seeds_agree(1) for c in concordant.values()):
        verdict, p = NOT, p_con
    else:
        verdict, p = INCONCLUSIVE, min(p_rev, p_con)
    pairs = [
        f"{hi} (top-1 {top1[hi]:.3f}) − {lo} ({top1[lo]:.3f}): VLM {c.text()} at {level:.1%}"
        for (hi, lo), c in found.items()
    ]
    evidence = (
        "; ".join(pairs)
        + f". {len(reversed_)} of {k} pair(s) where the better-pretrained tower gives a significantly worse VLM, "
        f"{len(concordant)} significantly in pretraining's order (Bonferroni over {k})."
    )
    runs = table.groupby("level")[["pretrain_top1", "vlm_accuracy"]].mean().reset_index()
    figure = runs.rename(columns={"level": "label", "pretrain_top1": "x", "vlm_accuracy": "y"})
    deciding = min(found.values(), key=lambda c: c.pooled.p_two(0))
    numbers = {
        **_numbers(deciding),
        "mde": f"±{detectable_multiple(ALPHA / k) * deciding.pooled.se:.3f}",
        "p": p,
    }
    return _claim("B3", text, verdict, evidence, "vision-pretraining", figure, **numbers)


def claim_dense(study, objective, tower_factor, boxes) -> dict:
    text = "detection-style (dense) tower pretraining improves localization"
    levels = study.spec.factors[objective].levels
    key = next(k for k in study.spec.factors[objective].keys if k.endswith(".objective"))
    by_value = {str(v.get(key)): lv for lv, v in levels.items()}
    if not boxes or "dense" not in by_value or "classify" not in by_value:
        why = "The study has no box-output task." if not boxes else "The objective factor lacks classify or dense."
        return _claim("B4", text, UNTESTED, why, "factor-effects")
    dense, classify = by_value["dense"], by_value["classify"]
    d = compare(pair_levels(study, objective, dense, classify, tasks=boxes))
    if d is None:
        return _claim("B4", text, UNTESTED, NO_PAIRS, "factor-effects")
    per_tower = {}
    if tower_factor is not None:
        for tower in study.spec.factors[tower_factor].levels:
            only = _only(study, {tower_factor: tower})
            per_tower[tower] = compare(pair_levels(only, objective, dense, classify, tasks=boxes))
    verdict, p = superiority(d)
    evidence = f"Acc@0.5, dense − classify {d.text()}, all towers pooled" + (
        "; per tower " + "; ".join(f"{t} {x.text()}" for t, x in per_tower.items() if x) if per_tower else ""
    )
    if _all_collapsed(study):
        verdict = INCONCLUSIVE
        evidence += "; every run is at or below random boxes"
    evidence += "."
    figure = delta_frame({"pooled": d, **per_tower})
    return _claim("B4", text, verdict, evidence, "factor-effects", figure, p=p, **_numbers(d))


def stabilization_levels(study: StudyData, stab: str) -> tuple[str, str] | None:
    """(plain, stable): the factor's first level, and the last one that sets paper B's stabilizers (the 3-layer
    `fused-gelu-mlp` connector or `letterbox-square` input) where the first does not; None if none does."""
    levels = study.spec.factors[stab].levels
    names = list(levels)
    plain = names[0]

    def sets_stabilizer(level: str) -> bool:
        sets = dict(levels[level])
        for part in ("model.projector", "data.image"):  # a level may set a whole section instead of its keys
            if isinstance(sets.get(part), dict):
                sets.update({f"{part}.{k}": v for k, v in sets[part].items()})
        return any(sets.get(k) == v for k, v in STABILIZERS.items())

    stable = [lv for lv in names[1:] if sets_stabilizer(lv) and not sets_stabilizer(plain)]
    return (plain, stable[-1]) if stable else None


def claim_stabilization(study, stab, boxes) -> dict:
    text = "a 3-layer connector and square letterbox input remove localization collapse"
    if not boxes:
        return _claim("B5", text, UNTESTED, "The study has no box-output task.", "grounding-collapse")
    found = stabilization_levels(study, stab)
    if found is None:
        why = f"No level of factor `{stab}` sets fused-gelu-mlp or letterbox-square against a first level without."
        return _claim("B5", text, UNTESTED, why, "grounding-collapse")
    plain, stable = found
    d = compare(pair_levels(study, stab, stable, plain, tasks=boxes))
    if d is None:
        return _claim("B5", text, UNTESTED, NO_PAIRS, "grounding-collapse")
    # collapse counted on matched runs only: a plain run whose other factors' levels also ran with the stable level
    others = [f for f in study.spec.factors if f != stab]
    runs = study.results.drop_duplicates(["variant", "seed"])[["variant", "seed", stab, *others]]
    table = collapse_table(study.results).merge(runs, on=["variant", "seed"])
    keys = ["seed", "task", *others]
    matched = table[table[stab] == plain].merge(table[table[stab] == stable], on=keys, suffixes=("_plain", "_stable"))
    c_plain, c_stable, n = int(matched["collapsed_plain"].sum()), int(matched["collapsed_stable"].sum()), len(matched)
    evidence = (
        f"collapsed, of {n} matched runs × box tasks: {plain} {c_plain}, {stable} {c_stable}; Acc@0.5 {stable} − "
        f"{plain} {d.text()}."
    )
    verdict, p = superiority(d)
    if c_plain == 0:
        verdict = INCONCLUSIVE
        evidence += " No plain run collapses at this scale, so there is nothing for the stabilization to remove."
    elif verdict == REPRODUCED and c_stable >= c_plain:
        verdict = INCONCLUSIVE
        evidence += " Localization improves, but no fewer runs collapse."
    elif verdict == NOT and c_stable < c_plain:
        verdict = INCONCLUSIVE
        evidence += " Fewer runs collapse, but localization is worse."
    figure = pd.DataFrame(
        {
            "label": [f"{plain} ({c_plain}/{n} collapsed)", f"{stable} ({c_stable}/{n})"],
            "acc": [float(matched["acc@0.5_plain"].mean()), float(matched["acc@0.5_stable"].mean())],
            "chance": float(matched["random_box_acc_plain"].mean()),
        }
    )
    return _claim("B5", text, verdict, evidence, "grounding-collapse", figure, p=p, **_numbers(d))


def judge(study: StudyData, params) -> tuple[str, list[dict]] | None:
    """Study B's claims; None when no factor swaps the vision tower."""
    factor = factor_declaring(study, "model.vision")
    if factor is None:
        return None
    towers = part_ids(study, factor, "vision")
    vit = next((lv for lv, t in towers.items() if t == "vit"), None)
    ssm = next((lv for want in SSM_TOWERS for lv, t in towers.items() if t == want), None)
    if vit is None or ssm is None:
        return None
    boxes = box_tasks(study.results)
    vqa = [t for t in dict.fromkeys(study.results["task"]) if t not in boxes]
    objective = factor_with_suffix(study, ".objective")
    stab = factor_declaring(study, "model.projector") or factor_declaring(study, "data.image.geometry")
    claims = [
        claim_localization(study, factor, vit, ssm, boxes),
        claim_vqa(study, factor, vit, ssm, vqa, params.margin),
        claim_pretraining(study, factor, params.min_top1_gap),
    ]
    claims.append(
        claim_dense(study, objective, factor, boxes)
        if objective is not None
        else _claim(
            "B4",
            "detection-style (dense) tower pretraining improves localization",
            UNTESTED,
            "No factor varies the vision-pretrain objective (`train.stages.N.objective`).",
            "factor-effects",
        )
    )
    claims.append(
        claim_stabilization(study, stab, boxes)
        if stab is not None
        else _claim(
            "B5",
            "a 3-layer connector and square letterbox input remove localization collapse",
            UNTESTED,
            "No factor varies the connector or the input geometry.",
            "grounding-collapse",
        )
    )
    design = f"factor `{factor}` swaps the vision tower: {ssm} ({towers[ssm]}) against {vit} (ViT)"
    return design, claims
