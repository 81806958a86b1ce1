"""`calibration`: does a variant's confidence mean what it says? ECE, MCE, Brier score, reliability diagrams.

Which of two variants is better calibrated is judged on the debiased calibration error over equal-mass bins
(`calibration_error`), not on the binned ECE, whose small-sample bias grows with the spread of confidences; the
interval resamples questions (`inference`). Missing confidences (NaN) are counted and left out, never read as 0;
a variant with none has no calibration (NaN, *not tested*).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import Field

from vlmlab.analysis import calibration_error as ce
from vlmlab.analysis.base import Analysis
from vlmlab.analysis.inference import estimate, point
from vlmlab.metrics import accuracy
from vlmlab.registry import PartParams, register_analysis
from vlmlab.render.document import Section
from vlmlab.render.plots import colours


def _bins(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin index per item; bin b holds (b/n, (b+1)/n], bin 0 also holds 0."""
    return np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)


def reliability_table(confidence, correct, n_bins: int = 15) -> pd.DataFrame:
    """Per non-empty bin: its range, item count, mean confidence and accuracy (answers with a missing confidence
    or outcome are left out)."""
    conf = np.asarray(confidence, dtype=float)
    corr = np.asarray(correct, dtype=float)
    if conf.shape != corr.shape:
        raise ValueError("confidence and correct must have the same length")
    keep = np.isfinite(conf) & np.isfinite(corr)
    conf, corr = conf[keep], corr[keep]
    if len(conf) and (conf.min() < 0 or conf.max() > 1):
        raise ValueError("confidence must lie in [0, 1]")
    idx = _bins(conf, n_bins)
    rows = []
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            rows.append(
                {
                    "bin_low": b / n_bins,
                    "bin_high": (b + 1) / n_bins,
                    "n": int(mask.sum()),
                    "confidence": float(conf[mask].mean()),
                    "accuracy": float(corr[mask].mean()),
                }
            )
    return pd.DataFrame(rows, columns=["bin_low", "bin_high", "n", "confidence", "accuracy"])


def expected_calibration_error(confidence, correct, n_bins: int = 15) -> float:
    """ECE: the item-weighted mean over equal-width confidence bins of |accuracy − mean confidence|."""
    table = reliability_table(confidence, correct, n_bins)
    if table.empty:
        return float("nan")
    return float((table["n"] * (table["accuracy"] - table["confidence"]).abs()).sum() / table["n"].sum())


def maximum_calibration_error(confidence, correct, n_bins: int = 15) -> float:
    """MCE: the largest |accuracy − mean confidence| over non-empty bins."""
    table = reliability_table(confidence, correct, n_bins)
    return float((table["accuracy"] - table["confidence"]).abs().max()) if not table.empty else float("nan")


def brier_score(confidence, correct) -> float:
    """Mean squared difference between the confidence and the 0/1 outcome (NaN when no answer has a confidence)."""
    conf, corr = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    keep = np.isfinite(conf) & np.isfinite(corr)
    return float(np.mean((conf[keep] - corr[keep]) ** 2)) if keep.any() else float("nan")


def debiased_ce(confidence, correct, n_bins: int = 15, frame: pd.DataFrame | None = None) -> float:
    """The debiased calibration error √max(CE², 0) over equal-mass bins (`calibration_error`); `frame` gives the
    task / item_id (questions) of each answer, else every answer is its own question."""
    f = pd.DataFrame({"c": np.asarray(confidence, dtype=float), "y": np.asarray(correct, dtype=float)})
    if frame is not None:
        f["task"], f["item_id"] = frame["task"].to_numpy(), frame["item_id"].to_numpy()
    else:
        f["task"], f["item_id"] = "all", np.arange(len(f))
    f = f[np.isfinite(f["c"]) & np.isfinite(f["y"])]
    if f.empty:
        return float("nan")
    return ce.rms(point(ce.ce_sample(f, ["c"], ["y"], n_bins), ce.single(n_bins)))


def _logit(confidence) -> np.ndarray:
    c = np.clip(np.asarray(confidence, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(c) - np.log1p(-c)


def fit_temperature(confidence, correct) -> float:
    """The T > 0 minimising the log loss of sigmoid(logit(confidence) / T) on these items (T > 1 softens)."""
    from scipy.optimize import minimize_scalar

    z, y = _logit(confidence), np.asarray(correct, dtype=float)
    if len(z) == 0 or y.min() == y.max():
        return 1.0

    def nll(log_t: float) -> float:
        p = np.clip(1 / (1 + np.exp(-z / np.exp(log_t))), 1e-9, 1 - 1e-9)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    return float(np.exp(minimize_scalar(nll, bounds=(-4, 4), method="bounded").x))


def apply_temperature(confidence, temperature: float) -> np.ndarray:
    return 1 / (1 + np.exp(-_logit(confidence) / temperature))


def heldout_half(frame: pd.DataFrame) -> np.ndarray:
    """A fixed half of the items (by a hash of seed and item id): temperature is fit on the other half."""
    from zlib import crc32

    return np.array([crc32(f"{s}/{i}".encode()) % 2 == 1 for s, i in zip(frame["seed"], frame["item_id"])], dtype=bool)


def ce_verdict(low: float, high: float) -> str:
    if high < 0:
        return "first better calibrated"
    if low > 0:
        return "second better calibrated"
    return "no detectable difference"


def ce_pairs(clean: pd.DataFrame, variants: list[str], n_bins: int) -> pd.DataFrame:
    """Per pair of variants and task: each one's debiased CE, CE²(first) − CE²(second) on the answers both gave
    with a confidence (the same seed and item), its 95% interval (questions resampled), the verdict, how many seeds
    show the same sign on their own, n (pairs, questions) and the pairs left out for a missing confidence."""
    rows = []
    keys = ["seed", "task", "item_id"]
    cols = [*keys, "confidence", "correct"]
    confs, corrects = ["confidence_a", "confidence_b"], ["correct_a", "correct_b"]
    for i, a in enumerate(variants):
        for b in variants[i + 1 :]:
            for task in dict.fromkeys(clean["task"]):
                f = clean[clean["task"] == task]
                pair = f[f["variant"] == a][cols].merge(f[f["variant"] == b][cols], on=keys, suffixes=("_a", "_b"))
                if pair.empty:
                    continue
                ok = pair[confs + corrects].notna().all(axis=1)
                row = {"first": a, "second": b, "task": task, "n": int(ok.sum()), "missing": int((~ok).sum())}
                if not ok.any():
                    rows.append({**row, "verdict": "not tested: no confidence"})
                    continue
                used = pair[ok].astype({"correct_a": float, "correct_b": float})
                s = ce.ce_sample(used, confs, corrects, n_bins)
                e = estimate(s, ce.difference(n_bins))  # CE²(b) − CE²(a): reported as first − second
                per_seed = [
                    -point(ce.ce_sample(g, confs, corrects, n_bins), ce.difference(n_bins))
                    for _, g in used.groupby("seed", sort=True)
                ]
                first, second = (float(ce.combined(s.totals()[None], n_bins, m)[0]) for m in (0, 1))
                rows.append(
                    {
                        **row,
                        "ce_first": ce.rms(first),
                        "ce_second": ce.rms(second),
                        "difference": -e.value,
                        "ci_low": -e.high,
                        "ci_high": -e.low,
                        "verdict": ce_verdict(-e.high, -e.low),
                        "seeds": len(per_seed),
                        "seeds_same_sign": int(sum(np.sign(d) == np.sign(-e.value) for d in per_seed)),
                        "questions": e.questions,
                    }
                )
    return pd.DataFrame(rows)


@dataclass
class CalibrationResult:
    n_bins: int
    temperature: bool
    variants: list[str]
    table: pd.DataFrame  # per variant and task: accuracy, mean confidence, ECE, MCE, Brier (+ temperature scaling)
    reliability: pd.DataFrame  # per variant, task and non-empty bin: n, mean confidence, share correct
    pairs: pd.DataFrame  # per pair of variants and task: debiased CE² difference, its interval, verdict (ce_pairs)


@register_analysis("calibration")
class Calibration(Analysis):
    """ECE / MCE / Brier per variant and task on clean evaluations, with reliability diagrams."""

    class Params(PartParams):
        n_bins: int = Field(15, ge=2, le=100)
        temperature: bool = True  # fit a temperature on half the items, report ECE on the other half

    title = "Calibration"
    Result = CalibrationResult
    version = 3  # pairwise verdicts on the debiased CE (questions resampled); missing confidences counted

    def compute(self, study, measured) -> CalibrationResult:
        n_bins = self.params.n_bins
        clean = study.results[study.results["mode"] == "clean"]
        rows, bins = [], []
        for (variant, task), f in clean.groupby(["variant", "task"], sort=False):
            has = f[f["confidence"].notna()]
            rows.append(
                {
                    "variant": variant,
                    "task": task,
                    "accuracy": accuracy(f),
                    "mean_confidence": has["confidence"].mean(),
                    "ece": expected_calibration_error(f["confidence"], f["correct"], n_bins),
                    "mce": maximum_calibration_error(f["confidence"], f["correct"], n_bins),
                    "brier": brier_score(f["confidence"], f["correct"]),
                    "ce_debiased": debiased_ce(f["confidence"], f["correct"].astype(float), n_bins, f),
                    "n": len(f),
                    "missing_confidence": int(len(f) - len(has)),
                    **(self._temperature(has, n_bins) if self.params.temperature and len(has) else {}),
                }
            )
        for task in dict.fromkeys(clean["task"]):
            for variant in study.variants:
                f = clean[(clean["task"] == task) & (clean["variant"] == variant)]
                rel = reliability_table(f["confidence"], f["correct"], n_bins)
                bins.append(rel.assign(variant=variant, task=task))
        reliability = pd.concat(bins, ignore_index=True) if bins else pd.DataFrame()
        pairs = ce_pairs(clean, study.variants, n_bins)
        return CalibrationResult(
            n_bins, self.params.temperature, study.variants, pd.DataFrame(rows), reliability, pairs
        )

    def render(self, r: CalibrationResult) -> Section:
        import matplotlib.pyplot as plt

        n_bins, table = r.n_bins, r.table
        section = Section(self.title)
        section.text(
            f"Confidence is the probability the model gives its whole answer (the product of its token "
            f"probabilities). ECE: item-weighted mean |share correct − confidence| over {n_bins} equal-width bins; "
            f"MCE: the worst bin; Brier: mean (confidence − correct)². The binned ECE is biased upward by the noise "
            "of each bin, the more so the more its confidences spread, so comparisons use `ce_debiased`: the "
            "debiased calibration error over equal-mass bins (Kumar, Liang & Ma, NeurIPS 2019; Roelofs et al., "
            "AISTATS 2022), √max(CE², 0), which is about 0 for any calibrated model. Answers without a confidence "
            "(`missing_confidence`) are left out; a variant without any has no calibration (NaN). Points below "
            "the diagonal are over-confident. `correct` is a full score (for boxes: IoU ≥ 0.5); `accuracy` is the "
            "task's mean score."
            + (
                " Temperature scaling: T is fit (log loss of sigmoid(logit(confidence)/T)) on a fixed half of "
                "the items and `ece_heldout` / `ece_heldout_scaled` are the ECE on the other half before / "
                "after it — how much of the miscalibration one scalar recovers. (The answer's confidence is "
                "rescaled as a yes/no probability, not the vocabulary logits.)"
                if r.temperature
                else ""
            )
        )
        tasks = list(dict.fromkeys(table["task"])) if not table.empty else []
        fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(3.3 * max(1, len(tasks)), 3.4), squeeze=False)
        cmap = colours(r.variants)
        for ax, task in zip(axes[0], tasks):
            ax.plot([0, 1], [0, 1], color="#888", ls=":", lw=1)
            for variant in r.variants:
                rel = r.reliability[(r.reliability["task"] == task) & (r.reliability["variant"] == variant)]
                ax.plot(rel["confidence"], rel["accuracy"], marker="o", ms=3, color=cmap[variant], label=variant)
            ax.set_title(task, fontsize=10)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("confidence")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("share correct")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        section.figure(fig, "Reliability diagrams (clean evaluation, pooled over seeds).", "calibration")
        section.table(table, "Per variant and task, pooled over seeds.")
        if not r.pairs.empty:
            section.table(
                r.pairs,
                "Which of two variants is better calibrated, per task: CE²(first) − CE²(second) (debiased, "
                "equal-mass bins) on the answers both gave with a confidence, with a 95% BCa interval over "
                "questions (a question's seeds move together); `n`: answer pairs, from `questions`; `missing`: "
                "pairs without a confidence; `seeds_same_sign`: of the `seeds` seeds, how many show a difference "
                "of the same sign on their own.",
            )
            decided = r.pairs[r.pairs["verdict"].isin(["first better calibrated", "second better calibrated"])]
            section.text(
                f"{len(decided)} of {len(r.pairs)} pairs × tasks differ in calibration beyond the interval"
                + (
                    ": "
                    + "; ".join(
                        f"{p['first']} {'below' if p['difference'] < 0 else 'above'} {p['second']} on "
                        f"`{p['task']}` ({p['difference']:+.3f}, {p['ci_low']:+.3f} to {p['ci_high']:+.3f})"
                        for _, p in decided.iterrows()
                    )
                    + " (CE²: lower is better calibrated)."
                    if len(decided)
                    else "."
                )
                + (" The verdicts rest on one seed." if r.pairs.get("seeds", pd.Series([1])).max() < 2 else "")
            )
        if not table.empty and table["ece"].notna().any():
            worst = table.sort_values("ece", ascending=False).iloc[0]
            section.text(
                f"Least calibrated: **{worst['variant']}** on `{worst['task']}` (ECE {worst['ece']:.3f}, "
                f"accuracy {worst['accuracy']:.3f} at mean confidence {worst['mean_confidence']:.3f})."
            )
        return section

    @staticmethod
    def _temperature(f: pd.DataFrame, n_bins: int) -> dict[str, float]:
        held = heldout_half(f)
        fit, test = f[~held], f[held]
        t = fit_temperature(fit["confidence"], fit["correct"])
        return {
            "temperature": t,
            "ece_heldout": expected_calibration_error(test["confidence"], test["correct"], n_bins),
            "ece_heldout_scaled": expected_calibration_error(
                apply_temperature(test["confidence"], t), test["correct"], n_bins
            ),
        }
