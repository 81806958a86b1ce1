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
from vlmlab.analysis.inference import Sample, estimate, pooled_mean
from vlmlab.registry import PartParams, register_analysis
from vlmlab.render import plots
from vlmlab.render.document import Section
from vlmlab.study.data import StudyData

ITEM = ["seed", "task", "item_id"]


def correctness(records: pd.DataFrame, mode: str = "clean") -> pd.DataFrame:
    """Items x variants of booleans (correct or not), for the items every variant answered in `mode`; how many
    items were left out (some variant has no answer, or a missing one) is in `wide.attrs["missing"]`."""
    rows = records[records["mode"] == mode]
    wide = rows.pivot_table(index=ITEM, columns="variant", values="correct", aggfunc="first", dropna=False)
    variants = list(dict.fromkeys(rows["variant"]))
    full = wide[variants].dropna().astype(bool)
    full.attrs["missing"] = len(wide) - len(full)
    return full


def pair_stats(
    a: np.ndarray,
    b: np.ndarray,
    alpha: float = 0.05,
    churn_threshold: float = 0.10,
    questions=None,
    margin: float = 0.02,
) -> dict:
    """Every overlap statistic of two correctness vectors over the same items, plus the verdict's inputs.

    flip_a_to_b: of the items A answers correctly, the fraction B gets wrong (and flip_b_to_a the reverse).
    net_gain = acc(B) − acc(A) = (only_b − only_a) / n, with its (1 − alpha) interval resampling `questions`
    (one id per row: a question's rows over seeds move together; None: every row is its own question);
    churn = (only_a + only_b) / n. McNemar's exact test needs one answer per question: with repeated questions
    (several seeds) its p is NaN and the interval decides.
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
    ids = np.arange(n) if questions is None else pd.factorize(pd.Series(list(questions)))[0]
    repeated = len(np.unique(ids)) < n
    p = 1.0 if discordant == 0 else float(binomtest(min(only_a, only_b), discordant, 0.5).pvalue)
    diff = b.astype(float) - a.astype(float)
    sums = np.bincount(ids, weights=diff) if n else np.zeros(0)
    counts = np.bincount(ids).astype(float) if n else np.zeros(0)
    net = estimate(
        Sample(["all"], np.zeros(len(sums), dtype=int), np.c_[counts, sums], n), pooled_mean, (0.0, -margin, margin),
        1 - alpha,
    )  # fmt: skip
    stats = {
        "n": n,
        "questions": int(len(sums)),
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
        "mcnemar_p": float("nan") if repeated else min(1.0, p),
        "oracle": (n - neither) / n if n else float("nan"),
        "net_gain": (only_b - only_a) / n if n else 0.0,
        "net_low": net.low if n else 0.0,
        "net_high": net.high if n else 0.0,
        "churn": discordant / n if n else 0.0,
    }
    stats["verdict"] = verdict(stats, churn_threshold, margin)
    return stats


def verdict(s: dict, churn_threshold: float = 0.10, margin: float = 0.02) -> str:
    """The rule (docs/studies.md): *more* / *fewer* = the net gain's interval (questions resampled) excludes 0;
    *as many* = it lies within ±`margin`; otherwise whether B solves as many is *not resolved* (no significant
    net gain is not read as none). *Different* = at least `churn_threshold` of the items change hands."""
    different = s["churn"] >= churn_threshold
    if s["net_low"] > 0 or s["net_high"] < 0:
        who = "B solves more questions" if s["net_gain"] > 0 else "B solves fewer questions"
        if s["churn"] >= 2 * abs(s["net_gain"]):
            who += ", and many different ones"
        return who
    if -margin < s["net_low"] and s["net_high"] < margin:
        return "B solves as many, different questions" if different else "B solves about the same questions"
    if different:
        return "B solves different questions; whether as many is not resolved"
    return "B solves mostly the same questions; whether as many is not resolved"


def pairwise(
    wide: pd.DataFrame, alpha: float = 0.05, churn_threshold: float = 0.10, margin: float = 0.02
) -> pd.DataFrame:
    """pair_stats of every pair of columns; rows indexed by (seed, task, item_id) or (seed, item_id): a question is
    (task, item_id)."""
    names = [n for n in ("task", "item_id") if n in wide.index.names]
    questions = list(zip(*(wide.index.get_level_values(n) for n in names)))
    rows = []
    for a, b in itertools.combinations(wide.columns, 2):
        found = pair_stats(wide[a].to_numpy(), wide[b].to_numpy(), alpha, churn_threshold, questions, margin)
        rows.append({"a": a, "b": b, **found})
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
    missing: int  # items left out: some variant has no answer (or a missing one) there
    intersections: pd.DataFrame  # UpSet's bars: one boolean column per variant + items
    oracle: pd.DataFrame  # one row: variants, items, oracle_accuracy, best_single


@register_analysis("overlap")
class Overlap(Analysis):
    """Do two variants solve *more* questions or *different* ones? Pairwise overlap statistics and an UpSet plot."""

    class Params(PartParams):
        alpha: float = Field(0.05, gt=0, lt=1)  # 1 − the level of the net gain's interval (more / fewer)
        churn: float = Field(0.10, ge=0, le=1)  # share of items changing hands that makes "different"
        margin: float = Field(0.02, gt=0, lt=1)  # "as many": the net gain's interval within ±margin

    title = "Question-level overlap"
    Result = OverlapResult
    version = 2  # the net gain's interval resamples questions; "as many" needs equivalence within ±margin

    def compute(self, study: StudyData, measured) -> OverlapResult:
        wide = correctness(study.results)
        alpha, churn, margin = self.params.alpha, self.params.churn, self.params.margin
        per_task = [
            pairwise(wide.xs(task, level="task", drop_level=False), alpha, churn, margin).assign(task=task)
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
            pairs=pairwise(wide, alpha, churn, margin),
            pairs_per_task=pd.concat(per_task, ignore_index=True) if per_task else pd.DataFrame(),
            missing=int(wide.attrs.get("missing", 0)),
            intersections=intersections(wide) if len(wide.columns) else pd.DataFrame(),
            oracle=pd.DataFrame([oracle]),
        )

    def render(self, t: OverlapResult) -> Section:
        section = Section(self.title)
        if len(t.variants) < 2:
            return section.text("One variant only: nothing to overlap.")
        p = self.params
        section.text(
            "Items are (seed, task, item) answered by every variant with the real image"
            + (f" ({t.missing} items left out: some variant has no answer there)" if t.missing else "")
            + ". For each pair A, B: how many items both / only A / only B / neither solve, the flip rates, φ and "
            f"Jaccard of correctness, and the net gain acc(B) − acc(A) with its {1 - p.alpha:.0%} interval "
            "(BCa bootstrap over questions: a question's seeds move together). The verdict: **more** / **fewer** "
            f"when the interval excludes 0; **as many** when it lies within ±{p.margin:.2f}; otherwise whether B "
            f"solves as many is **not resolved** (no significant gain is not read as none). **Different** when at "
            f"least {p.churn:.0%} of the items change hands (churn = (only A + only B) / n). McNemar's exact test "
            "is shown where each question has one answer (one seed). Solved = full credit (`correct`: score 1)."
        )
        pairs = t.pairs
        for _, r in pairs.iterrows():
            mcnemar = f", McNemar p {r['mcnemar_p']:.3g}" if np.isfinite(r["mcnemar_p"]) else ""
            section.text(
                f"**{r['b']} vs {r['a']}**: {r['verdict']} — only {r['b']} {r['only_b']}, only {r['a']} {r['only_a']}, "
                f"both {r['both']}, neither {r['neither']} (n {r['n']} from {r['questions']} questions); net gain "
                f"{r['net_gain']:+.3f} [{r['net_low']:+.3f}, {r['net_high']:+.3f}], churn {r['churn']:.3f}{mcnemar}, "
                f"φ {r['phi']:.2f}."
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
        columns = ["task", "a", "b", "n", "questions", "only_a", "only_b", "net_gain", "net_low", "net_high", "churn"]
        columns += ["verdict"]
        section.table(t.pairs_per_task[columns], "Per task.")
        return section
