"""`claims`: what the seed paper claims, and what this study shows: a verdict and its evidence per claim.

For a study whose factor swaps the LLM backbone (a ladder of `model.llm` levels, oldest first), the claims of
"Back to the Barn with LLAMAs: Evolving Pretrained LLM Backbones in Finetuning VLMs" (arXiv 2604.10985) are
tested on the oldest vs the newest level, each from the study's own per-item records:

- A1 the newest does not win uniformly (factor-effects per task);
- A2 it solves different questions rather than more (overlap: McNemar, churn, phi);
- A3 it is better calibrated (calibration: ECE difference with a paired bootstrap interval);
- A4 a capability appears only with it, e.g. coordinates (exclusive-capabilities, against chance);
- A5 perception gains less than reasoning (the two families' deltas and the interval of their difference).

Verdicts are *reproduced*, *not reproduced* or *inconclusive at this scale*. A verdict that holds pooled but
not in every seed on its own is inconclusive; with one seed the evidence says that it rests on one seed.
Claims this section cannot test say why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from vlmlab.analysis.base import Analysis
from vlmlab.analysis.calibration import ece_pairs
from vlmlab.analysis.exclusive import exclusive_table
from vlmlab.analysis.factor_effects import level_deltas, paired_scores
from vlmlab.analysis.overlap import correctness, pair_stats
from vlmlab.registry import register_analysis
from vlmlab.render import plots
from vlmlab.render.document import Section
from vlmlab.study.data import StudyData

PAPER_A = "Back to the Barn with LLAMAs (arXiv 2604.10985)"
REPRODUCED, NOT, INCONCLUSIVE, UNTESTED = "reproduced", "not reproduced", "inconclusive at this scale", "not tested"


def ladder_factor(study: StudyData) -> str | None:
    """The factor that swaps the LLM backbone (declares a `model.llm` key), if any."""
    for name, factor in study.spec.factors.items():
        if any(k == "model.llm" or k.startswith("model.llm.id") or k == "model.llm.path" for k in factor.keys):
            return name
    return None


def _seed_note(seeds: int, agree: int | None = None) -> str:
    if seeds < 2:
        return " Rests on one seed."
    return "" if agree is None else f" {agree} of {seeds} seeds agree on their own."


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
        evidence + "." + _seed_note(seeds, agree),
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
        + _seed_note(len(study.seeds))
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
        evidence + "." + _seed_note(len(study.seeds)),
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
        f"{point:+.3f} [{low:+.3f}, {high:+.3f}] (bootstrap over items of each family)" + "." + _seed_note(seeds, agree)
    )
    figure = pd.DataFrame(
        {"family": ["perception", "reasoning"], "delta": [diffs["perception"][0], diffs["reasoning"][0]]}
    )
    return _claim("A5", f"perception gains less than reasoning from {new}", verdict, evidence, "factor-effects", figure)


def _claim(cid, claim, verdict, evidence, analysis, figure) -> dict:
    return {
        "id": cid,
        "paper": PAPER_A,
        "claim": claim,
        "verdict": verdict,
        "evidence": evidence,
        "analysis": analysis,
        "figure": figure,
    }


@dataclass
class ClaimsResult:
    design: str  # what the study varies, in words ("" when no claim applies)
    claims: pd.DataFrame  # id, paper, claim, verdict, evidence, analysis
    figures: dict[str, pd.DataFrame]  # claim id -> the numbers its figure draws


@register_analysis("claims")
class Claims(Analysis):
    """What the seed paper claims, and what this study shows: a verdict and its evidence per claim."""

    title = "What the seeds claim, and what this study shows"
    Result = ClaimsResult

    def compute(self, study: StudyData, measured) -> ClaimsResult:
        factor = ladder_factor(study)
        if factor is None:
            return ClaimsResult("", pd.DataFrame(), {})
        old, new = oldest_and_newest(study, factor)
        old_level, new_level = (study.results[study.results["variant"] == v][factor].iloc[0] for v in (old, new))
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
        figures = {c["id"]: c.pop("figure") for c in claims}
        return ClaimsResult(
            f"factor `{factor}` swaps the LLM backbone: {old} (oldest) vs {new} (newest)",
            pd.DataFrame(claims),
            {k: v for k, v in figures.items() if v is not None},
        )

    def render(self, r: ClaimsResult) -> Section:
        section = Section(self.title)
        if r.claims.empty:
            return section.text(
                "No factor of this study swaps the LLM backbone, so no claim of study A is tested here (the claims "
                "of the vision-tower and routing studies are not judged by this section yet)."
            )
        section.text(
            f"This study tests the claims of {PAPER_A} where its design allows: {r.design}. Verdicts: *reproduced*, "
            "*not reproduced*, *inconclusive at this scale* (including a pooled result that not every seed shows on "
            "its own), *not tested* (why is given)."
        )
        section.table(r.claims[["id", "claim", "verdict", "evidence", "analysis"]], "Claims of study A.")
        if r.figures:
            import matplotlib.pyplot as plt

            fig, axes = plt.subplots(1, len(r.figures), figsize=(3.4 * len(r.figures), 3.2), squeeze=False)
            for ax, (cid, frame) in zip(axes[0], r.figures.items()):
                verdict = r.claims.set_index("id").loc[cid, "verdict"]
                _draw(ax, cid, frame)
                ax.set_title(f"{cid}: {verdict}", fontsize=9)
                ax.grid(alpha=0.3, axis="y")
            fig.tight_layout()
            section.figure(fig, "The evidence of each claim that has a figure (titles: claim and verdict).", "claims")
        return section


def _draw(ax, cid: str, frame: pd.DataFrame) -> None:
    colour = plots.colours(["a", "b", "c"])
    if cid == "A1":
        x = np.arange(len(frame))
        ax.bar(x, frame["delta"], color=colour["b"])
        ax.errorbar(
            x,
            frame["delta"],
            yerr=[frame["delta"] - frame["ci_low"], frame["ci_high"] - frame["delta"]],
            fmt="none",
            color="#333",
            lw=1,
        )
        ax.set_xticks(x, frame["task"], rotation=30, ha="right", fontsize=7)
        ax.axhline(0, color="#888", lw=0.8)
        ax.set_ylabel("accuracy delta, newest − oldest")
    elif cid == "A2":
        ax.bar(frame["group"], frame["items"], color=[colour["a"], "#999", colour["b"]])
        ax.set_ylabel("items × seeds")
        ax.tick_params(axis="x", labelsize=7)
    elif cid == "A3":
        x = np.arange(len(frame))
        ax.bar(x - 0.2, frame["ece_first"], 0.4, color=colour["a"], label="oldest")
        ax.bar(x + 0.2, frame["ece_second"], 0.4, color=colour["b"], label="newest")
        ax.set_xticks(x, frame["task"], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("ECE")
        ax.legend(fontsize=7)
    elif cid == "A5":
        ax.bar(frame["family"], frame["delta"], color=[colour["a"], colour["b"]])
        ax.axhline(0, color="#888", lw=0.8)
        ax.set_ylabel("accuracy delta, newest − oldest")
