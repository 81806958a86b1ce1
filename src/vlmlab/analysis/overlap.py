"""`overlap`: which questions each variant solves — contingency, flip rates, φ, Jaccard, McNemar, oracle, UpSet."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import Field
from scipy.stats import binomtest

from vlmlab.analysis.base import Analysis
from vlmlab.registry import PartParams, register_analysis
from vlmlab.render import plots
from vlmlab.render.document import Section
from vlmlab.study.data import StudyData

ITEM = ["seed", "task", "item_id"]


def correctness(records: pd.DataFrame, mode: str = "clean") -> pd.DataFrame:
    """Items x variants of booleans (correct or not), for the items every variant answered in `mode`."""
    rows = records[records["mode"] == mode]
    wide = rows.pivot_table(index=ITEM, columns="variant", values="correct", aggfunc="first")
    variants = list(dict.fromkeys(rows["variant"]))
    return wide[variants].dropna().astype(bool)


def pair_stats(a: np.ndarray, b: np.ndarray, alpha: float = 0.05, churn_threshold: float = 0.10) -> dict:
    """Every overlap statistic of two correctness vectors over the same items, plus the verdict's inputs.

    flip_a_to_b: of the items A answers correctly, the fraction B gets wrong (and flip_b_to_a the reverse).
    net_gain = acc(B) − acc(A) = (only_b − only_a) / n; churn = (only_a + only_b) / n.
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    n = len(a)
    both, only_a = int(np.sum(a & b)), int(np.sum(a & ~b))
    only_b, neither = int(np.sum(~a & b)), int(np.sum(~a & ~b))
    discordant = only_a + only_b
    denom = math.sqrt((both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither))
    if denom:
        phi = (both * neither - only_a * only_b) / denom
    else:  # a constant vector: φ is undefined unless the two are identical
        phi = 1.0 if discordant == 0 else float("nan")
    union = both + discordant
    p = 1.0 if discordant == 0 else float(binomtest(min(only_a, only_b), discordant, 0.5).pvalue)
    stats = {
        "n": n,
        "both": both,
        "only_a": only_a,
        "only_b": only_b,
        "neither": neither,
        "acc_a": (both + only_a) / n if n else float("nan"),
        "acc_b": (both + only_b) / n if n else float("nan"),
        "flip_a_to_b": only_a / (both + only_a) if both + only_a else 0.0,
        "flip_b_to_a": only_b / (both + only_b) if both + only_b else 0.0,
        "phi": phi,
        "jaccard": both / union if union else 1.0,
        "mcnemar_p": min(1.0, p),
        "oracle": (n - neither) / n if n else float("nan"),
        "net_gain": (only_b - only_a) / n if n else 0.0,
        "churn": discordant / n if n else 0.0,
    }
    stats["verdict"] = verdict(stats, alpha, churn_threshold)
    return stats


def verdict(s: dict, alpha: float = 0.05, churn_threshold: float = 0.10) -> str:
    """The rule (docs/studies.md): *more* = McNemar p < alpha (the net gain is not chance); *different* =
    not more, but at least `churn_threshold` of the items change hands; otherwise *about the same*."""
    if s["mcnemar_p"] < alpha:
        who = "B solves more questions" if s["only_b"] > s["only_a"] else "B solves fewer questions"
        if s["churn"] >= 2 * abs(s["net_gain"]):
            who += ", and many different ones"
        return who
    if s["churn"] >= churn_threshold:
        return "B solves different questions (no significant net gain)"
    return "B solves about the same questions"


def pairwise(wide: pd.DataFrame, alpha: float = 0.05, churn_threshold: float = 0.10) -> pd.DataFrame:
    rows = []
    for a, b in itertools.combinations(wide.columns, 2):
        rows.append({"a": a, "b": b, **pair_stats(wide[a].to_numpy(), wide[b].to_numpy(), alpha, churn_threshold)})
    return pd.DataFrame(rows)


def intersections(wide: pd.DataFrame) -> pd.DataFrame:
    """Counts of items per correctness pattern (which variants solve them), largest first: UpSet's bars."""
    pattern = wide.apply(lambda r: tuple(bool(v) for v in r), axis=1)
    counts = pattern.value_counts()
    rows = [{**dict(zip(wide.columns, p)), "items": int(c)} for p, c in counts.items()]
    return pd.DataFrame(rows).sort_values("items", ascending=False, kind="stable").reset_index(drop=True)


@dataclass
class OverlapResult:
    variants: list[str]
    pairs: pd.DataFrame  # every pair_stats, tasks pooled
    pairs_per_task: pd.DataFrame
    intersections: pd.DataFrame  # UpSet's bars: one boolean column per variant + items
    oracle: pd.DataFrame  # one row: variants, items, oracle_accuracy, best_single


@register_analysis("overlap")
class Overlap(Analysis):
    """Do two variants solve *more* questions or *different* ones? Pairwise overlap statistics and an UpSet plot."""

    class Params(PartParams):
        alpha: float = Field(0.05, gt=0, lt=1)  # McNemar significance level for "more"
        churn: float = Field(0.10, ge=0, le=1)  # share of items changing hands that makes "different"

    title = "Question-level overlap"
    Result = OverlapResult

    def compute(self, study: StudyData, measured) -> OverlapResult:
        wide = correctness(study.results)
        alpha, churn = self.params.alpha, self.params.churn
        per_task = [
            pairwise(wide.xs(task, level="task"), alpha, churn).assign(task=task)
            for task in wide.index.get_level_values("task").unique()
        ]
        n = len(wide)
        oracle = {
            "variants": len(wide.columns),
            "items": n,
            "oracle_accuracy": float(wide.any(axis=1).mean()) if n else float("nan"),
            "best_single": float(wide.mean().max()) if n else float("nan"),
        }
        return OverlapResult(
            variants=study.variants,
            pairs=pairwise(wide, alpha, churn),
            pairs_per_task=pd.concat(per_task, ignore_index=True) if per_task else pd.DataFrame(),
            intersections=intersections(wide) if len(wide.columns) else pd.DataFrame(),
            oracle=pd.DataFrame([oracle]),
        )

    def render(self, t: OverlapResult) -> Section:
        section = Section(self.title)
        if len(t.variants) < 2:
            return section.text("One variant only: nothing to overlap.")
        section.text(
            "Items are (seed, task, item) answered by every variant with the real image. For each pair A, B: "
            "how many items both / only A / only B / neither solve, the flip rates, φ and Jaccard of correctness, "
            f"McNemar's exact test on the discordant items, and the verdict: **more** when McNemar p < {self.params.alpha} "
            f"(B's net gain is not chance), **different** when not, but at least {self.params.churn:.0%} of the items "
            "change hands (churn = (only A + only B) / n), else **about the same**. Solved = full credit "
            "(`correct`: score 1)."
        )
        pairs = t.pairs
        for _, r in pairs.iterrows():
            section.text(
                f"**{r['b']} vs {r['a']}**: {r['verdict']} — only {r['b']} {r['only_b']}, only {r['a']} {r['only_a']}, "
                f"both {r['both']}, neither {r['neither']} (n {r['n']}); net gain {r['net_gain']:+.3f}, churn "
                f"{r['churn']:.3f}, McNemar p {r['mcnemar_p']:.3g}, φ {r['phi']:.2f}."
            )
        section.table(pairs, "All pairs, tasks pooled (A = the earlier variant in the spec).")
        oracle = t.oracle.iloc[0]
        section.text(
            f"Oracle (any variant correct): {oracle['oracle_accuracy']:.3f} vs the best single variant "
            f"{oracle['best_single']:.3f} over {int(oracle['items'])} items: the room a combination would have."
        )
        variants = [c for c in t.intersections.columns if c != "items"]  # the pattern columns, in spec order
        section.figure(
            plots.upset(t.intersections, variants),
            "Items per correctness pattern (dots: the variants that solve them), largest first.",
            "overlap_upset",
        )
        columns = ["task", "a", "b", "n", "only_a", "only_b", "net_gain", "churn", "mcnemar_p", "verdict"]
        section.table(t.pairs_per_task[columns], "Per task.")
        return section
