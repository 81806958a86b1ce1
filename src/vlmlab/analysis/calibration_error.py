"""A calibration error whose estimate is not biased by the number of answers or the spread of confidences.

The binned ECE is biased upward by the noise of each bin's share correct, more so the more bins the confidences
spread over (Kumar, Liang & Ma, "Verified Uncertainty Calibration", NeurIPS 2019; Roelofs et al., "Mitigating
Bias in Calibration Error Estimation", AISTATS 2022): two perfectly calibrated models, one always saying 0.6 and
one spreading its confidence, get different ECEs. vlmlab judges calibration on the **debiased squared ℓ2
calibration error over equal-mass bins**:

    CE² = Σ_b (n_b / n) · [ (ȳ_b − p̄_b)² − V_b ]

where ȳ_b, p̄_b are a bin's share correct and mean confidence and V_b is the variance of ȳ_b − p̄_b estimated
with questions as clusters (a question's answers over seeds are not independent): V_b = Q/(Q−1) ·
Σ_q (e_qb − ē_b c_qb)² / n_b², e_qb the question's summed (correct − confidence) in the bin, c_qb its rows there.
Subtracting V_b removes the noise term, so CE² is unbiased (it may be slightly negative for a calibrated model);
the report shows CE = √max(CE², 0). Bins are equal-mass (each holds the same number of answers), at most
`n_bins`, and at least 20 answers each. Rows whose confidence is missing (NaN) are counted and left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vlmlab.analysis.inference import Sample

COLUMNS = ("rows", "e", "e2", "ec", "c2", "q")  # per bin, summed over a question's rows: see the module docstring
MIN_PER_BIN = 20


def equal_mass_bins(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index per answer: answers sorted by confidence (stably) and cut into equal shares."""
    n = len(confidence)
    bins = max(1, min(n_bins, n // MIN_PER_BIN))
    rank = np.empty(n, dtype=int)
    rank[np.argsort(confidence, kind="stable")] = np.arange(n)
    return (rank * bins // max(n, 1)).astype(int)


def bin_values(frame: pd.DataFrame, conf: str, correct: str, n_bins: int) -> pd.DataFrame:
    """Per question (task, item_id): the six sums of each bin (`COLUMNS`), bins made per task; columns (bin, name)."""
    parts = []
    for task, f in frame.groupby("task", sort=False):
        b = equal_mass_bins(f[conf].to_numpy(dtype=float), n_bins)
        e = f[correct].to_numpy(dtype=float) - f[conf].to_numpy(dtype=float)
        rows = pd.DataFrame({"task": task, "item_id": f["item_id"].to_numpy(), "bin": b, "c": 1.0, "e": e})
        parts.append(rows.groupby(["task", "item_id", "bin"], sort=False)[["c", "e"]].sum().reset_index())
    per = pd.concat(parts, ignore_index=True)
    per = per.assign(e2=per["e"] ** 2, ec=per["e"] * per["c"], c2=per["c"] ** 2, q=1.0).rename(columns={"c": "rows"})
    wide = per.pivot_table(index=["task", "item_id"], columns="bin", values=list(COLUMNS), aggfunc="sum", sort=False)
    wide = wide.fillna(0.0)
    wide.columns = wide.columns.swaplevel(0, 1)
    full = pd.MultiIndex.from_product([range(n_bins), COLUMNS])
    return wide.reindex(columns=full, fill_value=0.0)


def squared_error(totals: np.ndarray, n_bins: int) -> np.ndarray:
    """CE² per stratum from totals of shape (..., strata, n_bins * 6): (..., strata)."""
    t = totals.reshape(*totals.shape[:-1], n_bins, len(COLUMNS))
    n, e, e2, ec, c2, q = (t[..., i] for i in range(len(COLUMNS)))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, e / n, 0.0)
        var = np.where(q > 1, q / np.maximum(q - 1, 1) * (e2 - 2 * mean * ec + mean**2 * c2) / np.maximum(n, 1) ** 2, 0)
        term = (mean**2 - var) * n
        return term.sum(-1) / n.sum(-1)


def ce_sample(frame: pd.DataFrame, confs: list[str], correct: list[str], n_bins: int) -> Sample:
    """Questions × (model, bin, sum) for the debiased CE of one or more models answering the same rows."""
    blocks = [bin_values(frame, c, y, n_bins) for c, y in zip(confs, correct)]
    wide = pd.concat(blocks, axis=1, keys=range(len(blocks))).fillna(0.0)
    tasks = wide.index.get_level_values("task")
    names = list(dict.fromkeys(tasks))
    index = {t: i for i, t in enumerate(names)}
    seeds = int(frame["seed"].nunique()) if "seed" in frame else 1
    stratum = np.array([index[t] for t in tasks], dtype=int)
    return Sample(names, stratum, wide.to_numpy(dtype=float), rows=len(frame), seeds=seeds)


def combined(totals: np.ndarray, n_bins: int, model: int) -> np.ndarray:
    """One model's CE², each task's then combined weighted by the task's answers: (...,)."""
    width = n_bins * len(COLUMNS)
    t = totals[..., model * width : (model + 1) * width]
    rows = t[..., 0 :: len(COLUMNS)].sum(-1)  # (..., strata)
    per = squared_error(t, n_bins)
    with np.errstate(invalid="ignore"):
        return np.nansum(per * rows, -1) / rows.sum(-1)


def difference(n_bins: int):
    """The statistic CE²(second model) − CE²(first model), combined over tasks."""

    def stat(totals: np.ndarray) -> np.ndarray:
        return combined(totals, n_bins, 1) - combined(totals, n_bins, 0)

    return stat


def single(n_bins: int):
    def stat(totals: np.ndarray) -> np.ndarray:
        return combined(totals, n_bins, 0)

    return stat


def rms(ce2: float) -> float:
    """The report's calibration error: √max(CE², 0)."""
    return float(np.sqrt(max(ce2, 0.0))) if np.isfinite(ce2) else float("nan")
