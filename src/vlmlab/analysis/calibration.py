"""`calibration`: does a variant's confidence mean what it says? ECE, MCE, Brier score, reliability diagrams."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import Field

from vlmlab.analysis.base import Analysis
from vlmlab.metrics import accuracy
from vlmlab.registry import PartParams, register_analysis
from vlmlab.render.document import Section
from vlmlab.render.plots import colours


def _bins(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin index per item; bin b holds (b/n, (b+1)/n], bin 0 also holds 0."""
    return np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)


def reliability_table(confidence, correct, n_bins: int = 15) -> pd.DataFrame:
    """Per non-empty bin: its range, item count, mean confidence and accuracy."""
    conf = np.asarray(confidence, dtype=float)
    corr = np.asarray(correct, dtype=float)
    if conf.shape != corr.shape:
        raise ValueError("confidence and correct must have the same length")
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
    """Mean squared difference between the confidence and the 0/1 outcome."""
    conf, corr = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    return float(np.mean((conf - corr) ** 2)) if len(conf) else float("nan")


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


def bootstrap_ece_difference(
    conf_a, correct_a, conf_b, correct_b, n_bins: int = 15, samples: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """(ECE(a) − ECE(b), 95% interval) over paired items: both variants answered the same items, and each
    bootstrap sample redraws items (with their two answers) with replacement."""
    conf_a, conf_b = np.asarray(conf_a, dtype=float), np.asarray(conf_b, dtype=float)
    gap_a = np.asarray(correct_a, dtype=float) - conf_a  # per item: correct − confidence; ECE sums it per bin
    gap_b = np.asarray(correct_b, dtype=float) - conf_b
    n = len(gap_a)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    onehot_a = np.eye(n_bins)[_bins(conf_a, n_bins)] * gap_a[:, None]  # (items, bins)
    onehot_b = np.eye(n_bins)[_bins(conf_b, n_bins)] * gap_b[:, None]
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(samples)])  # (samples, items)
    diff = (np.abs(counts @ onehot_a).sum(1) - np.abs(counts @ onehot_b).sum(1)) / n
    point = (np.abs(onehot_a.sum(0)).sum() - np.abs(onehot_b.sum(0)).sum()) / n
    return float(point), float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))


def ece_verdict(low: float, high: float) -> str:
    if high < 0:
        return "first better calibrated"
    if low > 0:
        return "second better calibrated"
    return "no detectable difference"


def ece_pairs(clean: pd.DataFrame, variants: list[str], n_bins: int) -> pd.DataFrame:
    """Per pair of variants and task: ECE of each, the difference with a paired item-bootstrap 95% interval
    (items x seeds resampled), its verdict, and the difference per seed (whether seeds agree on its sign)."""
    rows = []
    for i, a in enumerate(variants):
        for b in variants[i + 1 :]:
            for task in dict.fromkeys(clean["task"]):
                f = clean[clean["task"] == task]
                keys = ["seed", "item_id"]
                pair = f[f["variant"] == a][[*keys, "confidence", "correct"]].merge(
                    f[f["variant"] == b][[*keys, "confidence", "correct"]], on=keys, suffixes=("_a", "_b")
                )
                if pair.empty:
                    continue
                diff, low, high = bootstrap_ece_difference(
                    pair["confidence_a"], pair["correct_a"], pair["confidence_b"], pair["correct_b"], n_bins
                )
                per_seed = [
                    expected_calibration_error(g["confidence_a"], g["correct_a"], n_bins)
                    - expected_calibration_error(g["confidence_b"], g["correct_b"], n_bins)
                    for _, g in pair.groupby("seed", sort=True)
                ]
                rows.append(
                    {
                        "first": a,
                        "second": b,
                        "task": task,
                        "ece_first": expected_calibration_error(pair["confidence_a"], pair["correct_a"], n_bins),
                        "ece_second": expected_calibration_error(pair["confidence_b"], pair["correct_b"], n_bins),
                        "difference": diff,
                        "ci_low": low,
                        "ci_high": high,
                        "verdict": ece_verdict(low, high),
                        "seeds": len(per_seed),
                        "seeds_same_sign": int(sum(np.sign(d) == np.sign(diff) for d in per_seed)),
                        "n": len(pair),
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
    pairs: pd.DataFrame  # per pair of variants and task: ECE difference, paired bootstrap CI, verdict (ece_pairs)


@register_analysis("calibration")
class Calibration(Analysis):
    """ECE / MCE / Brier per variant and task on clean evaluations, with reliability diagrams."""

    class Params(PartParams):
        n_bins: int = Field(15, ge=2, le=100)
        temperature: bool = True  # fit a temperature on half the items, report ECE on the other half

    title = "Calibration"
    Result = CalibrationResult
    version = 2  # pairwise ECE verdicts

    def compute(self, study, measured) -> CalibrationResult:
        n_bins = self.params.n_bins
        clean = study.results[study.results["mode"] == "clean"]
        rows, bins = [], []
        for (variant, task), f in clean.groupby(["variant", "task"], sort=False):
            rows.append(
                {
                    "variant": variant,
                    "task": task,
                    "accuracy": accuracy(f),
                    "mean_confidence": f["confidence"].mean(),
                    "ece": expected_calibration_error(f["confidence"], f["correct"], n_bins),
                    "mce": maximum_calibration_error(f["confidence"], f["correct"], n_bins),
                    "brier": brier_score(f["confidence"], f["correct"]),
                    "n": len(f),
                    **(self._temperature(f, n_bins) if self.params.temperature else {}),
                }
            )
        for task in dict.fromkeys(clean["task"]):
            for variant in study.variants:
                f = clean[(clean["task"] == task) & (clean["variant"] == variant)]
                rel = reliability_table(f["confidence"], f["correct"], n_bins)
                bins.append(rel.assign(variant=variant, task=task))
        reliability = pd.concat(bins, ignore_index=True) if bins else pd.DataFrame()
        pairs = ece_pairs(clean, study.variants, n_bins)
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
            f"MCE: the worst bin; Brier: mean (confidence − correct)². Points below the diagonal are "
            f"over-confident. `correct` is a full score (for boxes: IoU ≥ 0.5); `accuracy` is the task's mean score."
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
                "Which of two variants is better calibrated, per task: ECE(first) − ECE(second) with a paired "
                "bootstrap 95% interval over the same items (1000 redraws of items × seeds); `seeds_same_sign`: "
                "of the `seeds` seeds, how many show a difference of the same sign on their own.",
            )
            decided = r.pairs[r.pairs["verdict"] != "no detectable difference"]
            section.text(
                f"{len(decided)} of {len(r.pairs)} pairs × tasks differ in calibration beyond the bootstrap interval"
                + (
                    ": "
                    + "; ".join(
                        f"{p['first']} {'below' if p['difference'] < 0 else 'above'} {p['second']} on "
                        f"`{p['task']}` ({p['difference']:+.3f}, {p['ci_low']:+.3f} to {p['ci_high']:+.3f})"
                        for _, p in decided.iterrows()
                    )
                    + " (ECE: lower is better calibrated)."
                    if len(decided)
                    else "."
                )
                + (" The verdicts rest on one seed." if r.pairs["seeds"].max() < 2 else "")
            )
        if not table.empty:
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
