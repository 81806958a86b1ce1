"""Study B's claims ("Do VLMs Need Vision Transformers? Evaluating State Space Models as Vision Encoders",
arXiv 2603.19209), judged on a study whose factor swaps the vision tower, against the ViT level, from the records:

- B1 a state-space tower (VMamba first, else the first SSM level) localizes better than the ViT (box tasks);
- B2 it matches or beats the ViT on VQA (every other task; non-inferiority within `margin`);
- B3 the tower's pretraining accuracy does not predict the VLM (a pair of towers ordered one way by pretraining
  top-1 and significantly the other way by the VLM);
- B4 detection-style (dense) pretraining improves localization (a factor over `train.stages.N.objective`);
- B5 the 3-layer connector with square letterbox input removes localization collapse (a factor over
  `model.projector` / `data.image.geometry`; collapse as `grounding-collapse` flags it).

Each comparison pairs the same items, seeds and levels of every other factor.
"""

from __future__ import annotations

import pandas as pd

from vlmlab.analysis.collapse import box_tasks, collapse_table
from vlmlab.analysis.verdicts import (
    INCONCLUSIVE,
    NOT,
    REPRODUCED,
    UNTESTED,
    claim,
    delta_frame,
    factor_declaring,
    non_inferiority,
    paired_delta,
    part_ids,
    seed_note,
    superiority,
)
from vlmlab.analysis.vision_pretraining import pretraining_table
from vlmlab.study.data import StudyData

PAPER_B = "Do VLMs Need Vision Transformers? (arXiv 2603.19209)"
SSM_TOWERS = ("vmamba", "vim")
STABILIZERS = {"model.projector.id": "fused-gelu-mlp", "data.image.geometry": "letterbox-square"}
NO_PAIRS = "No item pairs up between the compared levels (no two runs differ in this factor alone)."


def factor_with_suffix(study: StudyData, suffix: str) -> str | None:
    for name, factor in study.spec.factors.items():
        if any(k.endswith(suffix) for k in factor.keys):
            return name
    return None


def _claim(cid, text, verdict, evidence, analysis, figure=None) -> dict:
    return claim(PAPER_B, cid, text, verdict, evidence, analysis, figure)


def _only(study: StudyData, levels: dict[str, str]) -> StudyData:
    """The study restricted to the records at these levels of other factors ({factor: level})."""
    keep = pd.Series(True, index=study.results.index)
    for factor, level in levels.items():
        keep &= study.results[factor] == level
    return StudyData(study.path, study.spec, study.control, study.results[keep], study.summary)


def _all_collapsed(study: StudyData) -> bool:
    table = collapse_table(study.results)
    return not table.empty and bool(table["collapsed"].all())


def against(study, factor, reference, tasks) -> dict:
    """Every other level of `factor` minus `reference` on `tasks` ({level: Delta or None})."""
    return {
        lv: paired_delta(study, factor, lv, reference, tasks)
        for lv in study.spec.factors[factor].levels
        if lv != reference
    }


def listed(deltas: dict, reference: str) -> str:
    return "; ".join(f"{lv} − {reference} {x.text()}" for lv, x in deltas.items() if x)


def claim_localization(study, factor, vit, ssm, boxes) -> dict:
    text = f"a state-space tower ({ssm}) localizes better than the ViT ({vit})"
    if not boxes:
        return _claim("B1", text, UNTESTED, "The study has no box-output task.", "factor-effects")
    deltas = against(study, factor, vit, boxes)
    d = deltas[ssm]
    if d is None:
        return _claim("B1", text, UNTESTED, NO_PAIRS, "factor-effects")
    verdict = superiority(d)
    evidence = "Acc@0.5, " + listed(deltas, vit) + "."
    if _all_collapsed(study):
        verdict = INCONCLUSIVE
        evidence += " Every run is at or below random boxes, so localization cannot be compared at this scale."
    evidence += seed_note(len(study.seeds), d.agree())
    return _claim("B1", text, verdict, evidence, "factor-effects", delta_frame(deltas))


def claim_vqa(study, factor, vit, ssm, vqa, margin) -> dict:
    text = f"{ssm} matches or beats the ViT on VQA (within {margin:.2f})"
    if not vqa:
        return _claim("B2", text, UNTESTED, "The study has no task other than boxes.", "factor-effects")
    deltas = against(study, factor, vit, vqa)
    d = deltas[ssm]
    if d is None:
        return _claim("B2", text, UNTESTED, NO_PAIRS, "factor-effects")
    verdict = non_inferiority(d, margin)
    evidence = (
        f"accuracy on {', '.join(vqa)} pooled, "
        + listed(deltas, vit)
        + f"; non-inferiority margin −{margin:.2f}."
        + seed_note(len(study.seeds), d.agree())
    )
    return _claim("B2", text, verdict, evidence, "factor-effects", delta_frame(deltas).assign(margin=margin))


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
        return _claim(
            "B3", text, UNTESTED, "Fewer than two towers report a pretraining accuracy.", "vision-pretraining"
        )
    names = list(top1.index)
    discordant, concordant, pairs = [], [], []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            hi, lo = (a, b) if top1[a] >= top1[b] else (b, a)
            d = paired_delta(study, factor, hi, lo)  # VLM accuracy of the better-pretrained minus the other
            if d is None or top1[hi] - top1[lo] < min_gap:  # pretraining does not order these two
                continue
            pairs.append(f"{hi} (top-1 {top1[hi]:.3f}) − {lo} ({top1[lo]:.3f}): VLM {d.text()}")
            if d.high < 0:
                discordant.append((hi, lo))
            elif d.low > 0:
                concordant.append((hi, lo))
    if not pairs:
        return _claim(
            "B3",
            text,
            INCONCLUSIVE,
            f"No two towers differ by {min_gap:.3f} or more in pretraining top-1 ("
            + ", ".join(f"{lv} {v:.3f}" for lv, v in top1.items())
            + "), so pretraining orders none of them.",
            "vision-pretraining",
        )
    if discordant:
        verdict = REPRODUCED
    elif len(concordant) == len(pairs):
        verdict = NOT
    else:
        verdict = INCONCLUSIVE
    evidence = (
        "; ".join(pairs)
        + ". "
        + (
            f"{len(discordant)} pair(s) where the better-pretrained tower gives a significantly worse VLM."
            if discordant
            else "No pair where the better-pretrained tower gives a significantly worse VLM."
        )
    )
    runs = table.groupby("level")[["pretrain_top1", "vlm_accuracy"]].mean().reset_index()
    figure = runs.rename(columns={"level": "label", "pretrain_top1": "x", "vlm_accuracy": "y"})
    return _claim("B3", text, verdict, evidence + seed_note(len(study.seeds)), "vision-pretraining", figure)


def claim_dense(study, objective, tower_factor, boxes) -> dict:
    text = "detection-style (dense) tower pretraining improves localization"
    levels = study.spec.factors[objective].levels
    key = next(k for k in study.spec.factors[objective].keys if k.endswith(".objective"))
    by_value = {str(v.get(key)): lv for lv, v in levels.items()}
    if not boxes or "dense" not in by_value or "classify" not in by_value:
        why = "The study has no box-output task." if not boxes else "The objective factor lacks classify or dense."
        return _claim("B4", text, UNTESTED, why, "factor-effects")
    dense, classify = by_value["dense"], by_value["classify"]
    d = paired_delta(study, objective, dense, classify, boxes)
    if d is None:
        return _claim("B4", text, UNTESTED, NO_PAIRS, "factor-effects")
    per_tower = {}
    if tower_factor is not None:
        for tower in study.spec.factors[tower_factor].levels:
            per_tower[tower] = paired_delta(_only(study, {tower_factor: tower}), objective, dense, classify, boxes)
    verdict = superiority(d)
    evidence = f"Acc@0.5, dense − classify {d.text()} (all towers pooled)" + (
        "; per tower " + "; ".join(f"{t} {x.text()}" for t, x in per_tower.items() if x) if per_tower else ""
    )
    if _all_collapsed(study):
        verdict = INCONCLUSIVE
        evidence += "; every run is at or below random boxes"
    evidence += "." + seed_note(len(study.seeds), d.agree())
    return _claim("B4", text, verdict, evidence, "factor-effects", delta_frame({"pooled": d, **per_tower}))


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
    d = paired_delta(study, stab, stable, plain, boxes)
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
    if c_plain == 0:
        verdict = INCONCLUSIVE
        evidence += " No plain run collapses at this scale, so there is nothing for the stabilization to remove."
    elif c_stable < c_plain and d.low > 0:
        verdict = REPRODUCED
    elif c_stable >= c_plain and d.high < 0:
        verdict = NOT
    else:
        verdict = INCONCLUSIVE
    figure = pd.DataFrame(
        {
            "label": [f"{plain} ({c_plain}/{n} collapsed)", f"{stable} ({c_stable}/{n})"],
            "acc": [float(matched["acc@0.5_plain"].mean()), float(matched["acc@0.5_stable"].mean())],
            "chance": float(matched["random_box_acc_plain"].mean()),
        }
    )
    return _claim("B5", text, verdict, evidence + seed_note(len(study.seeds), d.agree()), "grounding-collapse", figure)


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
