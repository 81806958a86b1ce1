"""Study C's claims ("Late-Layer Fusion is Enough: Dual-Path Vision Token Routing for MLLMs under Visual
Saturation", arXiv 2606.09131), judged on a study whose factor sets `model.routing` (full, dpvr, fastv levels):

- C1 vision tokens saturate early: in the full model, text→image attention falls below the threshold before the
  last layer (the attention profile of the full level's first run). A description of one run, not a test: it
  takes no part in the report's multiplicity adjustment.
- C2 DPVR keeps the full model's accuracy at fewer prefill FLOPs: non-inferiority **per task** (each task's
  interval, and every seed's own delta, above −`margin`; a task missing for a level is named), and prefill FLOPs
  below the full model's; the share of the LLM's parameters it trains is reported.
- C3 at matched prefill FLOPs (within 10%), DPVR is more accurate than FastV's pruning: superiority, every task
  pooled (interval above 0, every seed's own delta positive); *not tested* when the FLOPs are not matched.

C2 and C3 are *not tested* when no item pairs up between the levels.
"""

from __future__ import annotations

import pandas as pd

from vlmlab.analysis.paired import compare, pair_levels
from vlmlab.analysis.verdicts import (
    INCONCLUSIVE,
    NO_PAIRS,
    NOT,
    REPRODUCED,
    UNTESTED,
    claim,
    delta_frame,
    factor_declaring,
    level_of,
    mde_text,
    non_inferiority,
    part_ids,
    superiority,
)
from vlmlab.measure.attention import AttentionProfile
from vlmlab.measure.cost import PrefillCost
from vlmlab.study.data import StudyData, run_json

PAPER_C = "Late-Layer Fusion is Enough: DPVR (arXiv 2606.09131)"
MATCHED_FLOPS = 0.10  # relative gap under which two variants count as matched in prefill FLOPs


def _claim(cid, text, verdict, evidence, analysis, figure=None, **numbers) -> dict:
    return claim(PAPER_C, cid, text, verdict, evidence, analysis, figure, **numbers)


def routing_levels(study: StudyData) -> tuple[str, dict[str, str], dict[str, str]] | None:
    """(factor, level -> routing id, routing id -> the level's first variant) when a factor sets the routing."""
    factor = factor_declaring(study, "model.routing")
    if factor is None:
        return None
    ids = part_ids(study, factor, "routing")
    first = {}
    for variant in study.variants:
        first.setdefault(ids[level_of(study, variant, factor)], variant)
    return factor, ids, first


def measurements(study: StudyData, params) -> list:
    """The full variant's attention profile and every variant's prefill cost (first seed), as the attention-profile
    and routing-cost analyses make them (the same stored measurements when their parameters agree)."""
    found = routing_levels(study)
    if found is None:
        return []
    _, _, first = found
    seed = study.seeds[0]
    out = [PrefillCost(study.run(v, seed).path, n_probe=params.cost_probe) for v in study.variants]
    if "full" in first:
        out.append(AttentionProfile(study.run(first["full"], seed).path, n_probe=params.n_probe))
    return out


def claim_saturation(profile: dict | None, threshold: float) -> dict:
    text = "vision tokens saturate early: text→image attention falls below the threshold before the last layer"
    if profile is None:
        return _claim("C1", text, UNTESTED, "The study has no full-routing level to profile.", "attention-profile")
    share, sat = profile["share"], profile["saturation_layer"]
    last = len(share) - 1
    if sat is None and share[-1] < share[0]:
        verdict, why = (
            INCONCLUSIVE,
            (
                f"the share falls but never stays below {threshold} in these {last + 1} layers (the paper's LLaVA-1.5 "
                "saturates by layer 4 of 32)"
            ),
        )
    elif sat is None:
        verdict, why = NOT, f"the share does not fall with depth and never stays below {threshold}"
    elif sat < last:
        verdict, why = REPRODUCED, f"saturation at layer {sat} of {last}: layers {sat}–{last} could carry text alone"
    else:
        verdict, why = INCONCLUSIVE, f"below {threshold} only at the last layer: nothing to route around"
    evidence = (
        f"share {share[0]:.3f} at layer 0 → {share[-1]:.3f} at layer {last}; {why}. One run's profile (the full "
        "level's first seed): a description, not a test."
    )
    figure = pd.DataFrame({"x": list(range(len(share))), "y": share, "label": ["full"] * len(share)})
    return _claim("C1", text, verdict, evidence, "attention-profile", figure, seeds=1)


def claim_dpvr_keeps(study, factor, levels, costs, margin, dpvr_run: str) -> dict:
    text = f"DPVR keeps the full model's accuracy, task by task (within {margin:.2f}), at fewer prefill FLOPs"
    full, dpvr = levels["full"], levels["dpvr"]
    paired = pair_levels(study, factor, dpvr, full)
    if paired.frame.empty:
        return _claim("C2", text, UNTESTED, NO_PAIRS, "routing-cost")
    r = non_inferiority(paired, margin)
    verdict = r["verdict"]
    ratio = costs[dpvr] / costs[full]
    if verdict == REPRODUCED and ratio >= 1:
        verdict = NOT
    info = run_json(study.run(dpvr_run, study.seeds[0]).train_info)
    trained = max((v.get("routing", 0) for v in (info.get("trainable") or {}).values()), default=0)  # one set
    llm = (info.get("parameters") or {}).get("llm") or 0
    share = f"; it trains {trained:,} routing parameters ({trained / llm:.1%} of the LLM's)" if llm else ""
    lost = paired.lost_text()
    evidence = (
        f"accuracy dpvr − full per task: {r['evidence']} (margin −{margin:.2f}); prefill FLOPs {ratio:.2f}× full"
        + share
        + (" — no saving in compute at this routing layer" if ratio >= 1 else "")
        + "."
        + (f" {lost}." if lost else "")
    )
    figure = delta_frame({t: e for t, (e, _) in r["tasks"].items()}).assign(margin=margin)
    worst = min(r["tasks"].items(), key=lambda kv: kv[1][0].low)
    numbers = {
        "seeds": paired.seeds,
        "questions": paired.questions,
        "estimate": f"lowest task {worst[0]} {worst[1][0].text()}",
        "mde": r["mde"],
        "p": r["p"],
    }
    return _claim("C2", text, verdict, evidence, "routing-cost", figure, **numbers)


def claim_dpvr_beats_pruning(study, factor, levels, costs) -> dict:
    text = "at matched prefill FLOPs, DPVR is more accurate than FastV pruning"
    dpvr, fastv = levels["dpvr"], levels["fastv"]
    d = compare(pair_levels(study, factor, dpvr, fastv))
    if d is None:
        return _claim("C3", text, UNTESTED, NO_PAIRS, "routing-cost")
    gap = abs(costs[dpvr] - costs[fastv]) / costs[fastv]
    verdict, p = superiority(d)
    evidence = f"accuracy dpvr − fastv {d.text()}; prefill FLOPs dpvr / fastv {costs[dpvr] / costs[fastv]:.2f}"
    if gap > MATCHED_FLOPS:
        verdict, p = UNTESTED, float("nan")
        evidence += f" — not matched within {MATCHED_FLOPS:.0%}, so the design does not compare them at equal compute"
    lost = d.paired.lost_text()
    evidence += "." + (f" {lost}." if lost else "")
    numbers = {
        "seeds": d.paired.seeds,
        "questions": d.paired.questions,
        "estimate": d.pooled.text(),
        "mde": mde_text(d.pooled),
        "p": p,
    }
    return _claim("C3", text, verdict, evidence, "routing-cost", delta_frame({"dpvr − fastv": d}), **numbers)


def judge(study: StudyData, params, measured: list) -> tuple[str, list[dict]] | None:
    """Study C's claims; None when no factor sets the routing."""
    found = routing_levels(study)
    if found is None:
        return None
    factor, _, first = found
    by_id = {rid: level_of(study, v, factor) for rid, v in first.items()}
    costs = {
        level_of(study, v, factor): m.read()["prefill_gflops_per_prompt"] for v, m in zip(study.variants, measured)
    }
    profile = measured[-1].profile(params.threshold) if "full" in by_id else None
    claims = [claim_saturation(profile, params.threshold)]
    if {"full", "dpvr"} <= set(by_id):
        claims.append(claim_dpvr_keeps(study, factor, by_id, costs, params.margin, first["dpvr"]))
    else:
        claims.append(
            _claim(
                "C2",
                "DPVR keeps the full model's accuracy at fewer prefill FLOPs",
                UNTESTED,
                "The study lacks a full or a dpvr level.",
                "routing-cost",
            )
        )
    if {"dpvr", "fastv"} <= set(by_id):
        claims.append(claim_dpvr_beats_pruning(study, factor, by_id, costs))
    else:
        claims.append(
            _claim(
                "C3",
                "at matched prefill FLOPs, DPVR is more accurate than FastV pruning",
                UNTESTED,
                "The study lacks a dpvr or a fastv level.",
                "routing-cost",
            )
        )
    levels = ", ".join(f"{lv} ({rid})" for rid, lv in by_id.items())
    return f"factor `{factor}` sets how vision tokens flow through the LLM: {levels}", claims
