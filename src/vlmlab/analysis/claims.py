"""`claims`: what the seed papers claim, and what this study shows: a verdict and its evidence per claim.

Each seed paper's claims are judged where the study's design allows (one module per paper):

- study A (`claims_llm`): a factor swaps the LLM backbone — the oldest vs the newest rung;
- study B (`claims_vision`): a factor swaps the vision tower — a state-space tower vs the ViT, plus the
  pretraining-objective and stabilization factors when the study crosses them;
- study C (`claims_routing`): a factor sets `model.routing` — saturation, DPVR against full and against FastV.

Verdicts (`analysis.verdicts`): *reproduced*, *not reproduced*, *inconclusive at this scale*, *seeds disagree*,
*missing data*, *not tested* (with why). Every claim's rule is stated in its module's docstring and in
docs/studies.md; every interval comes from `analysis.inference` (questions resampled); the claims' primary tests
are adjusted together with Holm's procedure, and each claim carries the minimum detectable effect of its test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import Field

from vlmlab.analysis import claims_llm, claims_routing, claims_vision
from vlmlab.analysis.base import Analysis
from vlmlab.analysis.inference import ALPHA, POWER, RESAMPLES
from vlmlab.analysis.verdicts import DECIDED, apply_holm, verdict_cell
from vlmlab.registry import PartParams, register_analysis
from vlmlab.render import plots
from vlmlab.render.document import Section
from vlmlab.study.data import StudyData

PAPERS = {"A": claims_llm.PAPER_A, "B": claims_vision.PAPER_B, "C": claims_routing.PAPER_C}


@dataclass
class ClaimsResult:
    design: str  # what the study varies, in words ("" when no claim applies)
    claims: pd.DataFrame  # id, paper, claim, verdict, seeds, questions, estimate, mde, p, p_holm, evidence, analysis
    figures: dict[str, pd.DataFrame]  # claim id -> the numbers its figure draws


@register_analysis("claims")
class Claims(Analysis):
    """What the seed papers claim, and what this study shows: a verdict and its evidence per claim."""

    class Params(PartParams):
        margin: float = Field(0.02, gt=0, lt=1)  # "matches" / "as many": accuracy within ±margin (docs/studies.md)
        near: float = Field(0.05, ge=0, lt=1)  # A4: "at chance" = the exact upper bound within chance + near
        n_bins: int = Field(15, ge=1, le=100)  # A3: at most this many equal-mass calibration bins
        threshold: float = Field(0.1, gt=0, lt=1)  # attention saturation threshold, as attention-profile's
        n_probe: int = Field(256, ge=1)  # attention-profile probe items (the same stored measurement by default)
        cost_probe: int = Field(64, ge=1)  # routing-cost probe prompts (likewise)
        min_top1_gap: float = Field(0.01, ge=0, lt=1)  # B3: towers closer in pretraining top-1 are not ordered by it

    title = "What the seeds claim, and what this study shows"
    Result = ClaimsResult
    version = 5  # one inference core: questions resampled, Holm, MDE, the new verdict words

    def measurements(self, study: StudyData) -> list:
        return claims_routing.measurements(study, self.params)

    def compute(self, study: StudyData, measured) -> ClaimsResult:
        judged = [
            claims_llm.judge(study, self.params),
            claims_vision.judge(study, self.params),
            claims_routing.judge(study, self.params, measured),
        ]
        designs, claims = [], []
        for found in judged:
            if found is not None:
                designs.append(found[0])
                claims.extend(found[1])
        if not claims:
            return ClaimsResult("", pd.DataFrame(), {})
        figures = {c["id"]: c.pop("figure") for c in claims}
        table = apply_holm(pd.DataFrame(claims), ALPHA)
        return ClaimsResult("; ".join(designs), table, {k: v for k, v in figures.items() if v is not None})

    def render(self, r: ClaimsResult) -> Section:
        section = Section(self.title)
        if r.claims.empty:
            return section.text(
                "No factor of this study swaps the LLM backbone (study A), the vision tower against a ViT (study B) "
                "or the routing of vision tokens (study C), so no seed claim is tested here."
            )
        papers = [PAPERS[k] for k in PAPERS if (r.claims["id"].str[0] == k).any()]
        section.text(
            f"This study tests the claims of {' and '.join(papers)} where its design allows: {r.design}. Verdicts: "
            "**reproduced**, **not reproduced**, **inconclusive at this scale** (the interval leaves it open: the MDE "
            "column says how large an effect the study could have seen), **seeds disagree** (the pooled test "
            "decides, some seed's own result does not follow), **missing data** (a task or questions the claim "
            "needs did not pair; named), **not tested** (the design cannot test it; why is given). Each verdict "
            "cell says how many seeds it rests on."
        )
        section.text(multiplicity(r.claims))
        for paper, frame in r.claims.groupby("paper", sort=False):
            shown = frame.assign(
                verdict=[verdict_cell(v, s) for v, s in zip(frame["verdict"], frame["seeds"])],
                n=[n_cell(q, s) for q, s in zip(frame["questions"], frame["seeds"])],
                p_holm=[f"{p:.3g}" if np.isfinite(p) else "" for p in frame["p_holm"]],
            )
            columns = ["id", "claim", "verdict", "n", "estimate", "mde", "p_holm", "evidence", "analysis"]
            section.table(
                shown[columns].rename(columns={"mde": "detectable at 80% power", "p_holm": "p (Holm)"}),
                f"Claims of {paper}. n: questions × seeds paired; estimate: the deciding effect with its 95% "
                "interval (questions resampled); detectable: the minimum detectable effect of its test.",
            )
        if r.figures:
            import matplotlib.pyplot as plt

            n = len(r.figures)
            cols = min(n, 4)
            rows = -(-n // cols)
            fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False)
            claims = r.claims.set_index("id")
            for ax, (cid, frame) in zip(axes.flat, r.figures.items()):
                _draw(ax, cid, frame)
                ax.set_title(f"{cid}: {verdict_cell(claims.loc[cid, 'verdict'], claims.loc[cid, 'seeds'])}", fontsize=9)
                ax.grid(alpha=0.3, axis="y")
            for ax in list(axes.flat)[n:]:
                ax.set_visible(False)
            fig.tight_layout()
            section.figure(
                fig, "The evidence of each claim that has a figure (titles: claim, verdict and its seeds).", "claims"
            )
        return section


def n_cell(questions: int, seeds: int) -> str:
    return f"{questions} q × {seeds} seed{'s' if seeds != 1 else ''}" if questions else ""


def multiplicity(claims: pd.DataFrame) -> str:
    """The paragraph on how many claims are judged and how the family-wise error is handled."""
    tested = claims[claims["p"].notna()]
    decided = tested[tested["verdict"].isin(DECIDED)]
    described = claims[claims["p"].isna() & (claims["verdict"] != "not tested")]
    return (
        f"**How many claims, and multiplicity.** This report judges {len(claims)} claims; {len(tested)} have a "
        f"primary statistical test ({', '.join(tested['id']) or 'none'})"
        + (
            f", {', '.join(described['id'])} {'is a description' if len(described) == 1 else 'are descriptions'} of one run"
            if len(described)
            else ""
        )
        + f". The {len(tested)} primary p-values are adjusted together with Holm's step-down procedure at "
        f"{ALPHA:.0%} (family-wise error); a test that decides on its own but not after the adjustment is reported "
        f"**inconclusive at this scale**, and its evidence says so. {len(decided)} verdict(s) are decided after "
        "the adjustment. A claim that needs several tests at once (every task non-inferior, every seed agreeing) "
        "passes only if each does, which needs no further adjustment; a claim that any of several comparisons can "
        "decide (a pair of tasks, of towers) uses Bonferroni-adjusted intervals within it. Intervals: "
        f"bias-corrected and accelerated bootstrap over questions (within tasks; a question's rows across seeds "
        f"and other factors' levels move together), {RESAMPLES[0]:,} resamples, raised to {RESAMPLES[1]:,} and "
        f"{RESAMPLES[2]:,} where a bound is near its decision threshold. Minimum detectable effects: "
        f"{POWER:.0%} power at the test's own level, from the study's own paired variance."
    )


def _draw(ax, cid: str, frame: pd.DataFrame) -> None:
    colour = plots.colours(["a", "b", "c"])
    if cid == "A1":
        _deltas(ax, frame.rename(columns={"task": "label"}), "accuracy delta, newest − oldest")
    elif cid == "A2":
        ax.bar(frame["group"], frame["items"], color=[colour["a"], "#999", colour["b"]])
        ax.set_ylabel("items × seeds")
        ax.tick_params(axis="x", labelsize=7)
    elif cid == "A3":
        x = np.arange(len(frame))
        ax.bar(x - 0.2, frame["ce_first"], 0.4, color=colour["a"], label="oldest")
        ax.bar(x + 0.2, frame["ce_second"], 0.4, color=colour["b"], label="newest")
        ax.set_xticks(x, frame["task"], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("calibration error (debiased)")
        ax.legend(fontsize=7)
    elif cid == "A4":  # Acc@0.5 per rung and box task, dashed: chance
        ax.bar(frame["label"], frame["acc"], color=[colour["a"], colour["b"]] * (len(frame) // 2))
        for i, c in enumerate(frame["chance"]):
            ax.hlines(c, i - 0.4, i + 0.4, color="#888", ls="--", lw=0.8)
        ax.set_ylabel("Acc@0.5 (dashed: chance)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    elif cid == "A5":
        ax.bar(frame["family"], frame["delta"], color=[colour["a"], colour["b"]])
        ax.axhline(0, color="#888", lw=0.8)
        ax.set_ylabel("accuracy delta, newest − oldest")
    elif "ci_low" in frame:  # B1, B2, B4, C2, C3: labelled paired deltas with their intervals
        _deltas(ax, frame, YLABELS.get(cid, "accuracy delta"))
    elif cid == "C1":
        ax.plot(frame["x"], frame["y"], marker="o", ms=3, color=colour["b"])
        ax.set_xlabel("LLM layer")
        ax.set_ylabel("text → image attention share")
        ax.set_ylim(0, 1)
    elif "x" in frame:  # B3: pretraining top-1 against the VLM's accuracy, one point per tower
        ax.scatter(frame["x"], frame["y"], color=colour["b"])
        for _, r in frame.iterrows():
            ax.annotate(str(r["label"]), (r["x"], r["y"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("vision-pretraining top-1")
        ax.set_ylabel("VLM accuracy")
    elif "acc" in frame:  # B5: Acc@0.5 per interface level (collapsed runs in the labels), random boxes dashed
        ax.bar(frame["label"], frame["acc"], color=[colour["a"], colour["b"]][: len(frame)])
        ax.axhline(frame["chance"].iloc[0], color="#888", ls="--", lw=0.8)
        ax.set_ylabel("Acc@0.5 (dashed: random boxes)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)


YLABELS = {
    "B1": "Acc@0.5 delta vs ViT",
    "B2": "VQA accuracy delta vs ViT",
    "B4": "Acc@0.5, dense − classify",
    "C2": "accuracy delta",
    "C3": "accuracy delta",
}


def _deltas(ax, frame: pd.DataFrame, ylabel: str) -> None:
    x = np.arange(len(frame))
    ax.bar(x, frame["delta"], color=plots.colours(["a", "b"])["b"])
    ax.errorbar(
        x,
        frame["delta"],
        yerr=[frame["delta"] - frame["ci_low"], frame["ci_high"] - frame["delta"]],
        fmt="none",
        color="#333",
        lw=1,
    )
    ax.set_xticks(x, frame["label"], rotation=30, ha="right", fontsize=7)
    ax.axhline(0, color="#888", lw=0.8)
    if "margin" in frame:  # a non-inferiority claim: the interval must stay above −margin
        ax.axhline(-frame["margin"].iloc[0], color="#c44", ls="--", lw=0.8)
    ax.set_ylabel(ylabel + (" (dashed: −margin)" if "margin" in frame else ""), fontsize=8)
