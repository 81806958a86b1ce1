"""The one inference core every comparison uses: questions resampled as units, one interval method, Holm, exact tests.

The method (docs/studies.md, "How a verdict is computed"):

- **Unit.** A question (task, item) is the unit of resampling: its rows across seeds and across the levels of
  other factors move together, so answers that repeat over seeds are not counted as independent evidence
  (Miller, "Adding Error Bars to Evals", arXiv 2411.00640: cluster the error by question).
- **Strata.** Questions are resampled within their task, so every task keeps its size in every resample.
- **Interval.** A bias-corrected and accelerated (BCa) bootstrap interval (Efron 1987; the acceleration from
  the leave-one-question-out jackknife), 95% unless a rule asks for a Bonferroni-adjusted level.
- **Resamples.** 2,000; where a bound lies within three Monte Carlo standard errors of a decision threshold
  (0, or a margin), the count is raised to 20,000 and then to 100,000, so Monte Carlo error cannot move a
  bound across it. The random stream is fixed (seed 0): the same records give the same interval.
- **p-values.** The achieved significance level of the BCa interval at a threshold (the level at which the
  bound touches it), so p < 0.025 one-sided is exactly "the 95% interval excludes the threshold".
- **Many tests.** `holm` adjusts a family of p-values (Holm's step-down procedure).

A statistic is a function of per-stratum totals: `Sample.values` holds, per question, sums of k additive
quantities over its rows (a count, a difference, a squared residual, …); a statistic maps totals of shape
(..., strata, k) to (...). Means, differences between tasks, φ from 2×2 counts and debiased calibration errors
are all such functions, so one resampling engine serves them all.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import binomtest, norm

ALPHA = 0.05  # two-sided level of every interval (95%), unless a rule adjusts it
POWER = 0.80  # the power a minimum detectable effect is computed at
RESAMPLES = (2_000, 20_000, 100_000)  # the count, and what it is raised to when a bound is close to a threshold
MC_SE = 3.0  # "close": within this many Monte Carlo standard errors
QUESTION = ["task", "item_id"]

Statistic = Callable[[np.ndarray], np.ndarray]


@dataclass
class Sample:
    """Questions with their stratum (task) and k additive quantities summed over each question's rows."""

    strata: list[str]
    stratum: np.ndarray  # (questions,) index into `strata`
    values: np.ndarray  # (questions, k)
    rows: int = 0  # rows behind the sums (questions x seeds x levels of other factors)
    seeds: int = 0

    @property
    def questions(self) -> int:
        return len(self.stratum)

    def totals(self) -> np.ndarray:
        """(strata, k): the sums of every quantity per stratum."""
        out = np.zeros((len(self.strata), self.values.shape[1]))
        np.add.at(out, self.stratum, self.values)
        return out

    def only(self, strata: Sequence[str]) -> Sample:
        keep = [self.strata.index(s) for s in strata]
        mask = np.isin(self.stratum, keep)
        remap = {old: new for new, old in enumerate(keep)}
        return Sample(list(strata), np.array([remap[s] for s in self.stratum[mask]], dtype=int), self.values[mask])


def sample(frame: pd.DataFrame, columns: list[str], stratum: str = "task", question=QUESTION) -> Sample:
    """Sum `columns` over each question's rows of `frame` (one question: one `question` key; stratum: `stratum`)."""
    if frame.empty:
        return Sample([], np.zeros(0, dtype=int), np.zeros((0, len(columns))))
    key = np.zeros(len(frame), dtype=np.int64)
    for name in question:  # one integer per question: the columns' codes combined
        codes, uniques = pd.factorize(frame[name], sort=False)
        key = key * (len(uniques) + 1) + codes
    q = pd.factorize(key, sort=False)[0]
    n = int(q.max()) + 1
    values = np.column_stack([np.bincount(q, weights=frame[c].to_numpy(dtype=float), minlength=n) for c in columns])
    first = np.zeros(n, dtype=np.int64)
    first[q[::-1]] = np.arange(len(q))[::-1]  # each question's first row
    strata_codes, names = pd.factorize(frame[stratum].to_numpy()[first], sort=False)
    seeds = int(frame["seed"].nunique()) if "seed" in frame else 1
    return Sample([str(x) for x in names], strata_codes.astype(int), values, rows=len(frame), seeds=seeds)


@dataclass
class Estimate:
    """A statistic, its interval, the bootstrap standard error and the p-values at its decision thresholds."""

    value: float
    low: float
    high: float
    se: float
    level: float = 1 - ALPHA
    resamples: int = 0
    questions: int = 0
    rows: int = 0
    seeds: int = 0
    p_above: dict[float, float] = field(default_factory=dict)  # one-sided p of "the statistic exceeds t"
    p_below: dict[float, float] = field(default_factory=dict)  # one-sided p of "the statistic is under t"

    def above(self, t: float = 0.0) -> bool:
        return bool(self.low > t)

    def below(self, t: float = 0.0) -> bool:
        return bool(self.high < t)

    def p_two(self, t: float = 0.0) -> float:
        """Two-sided p-value at t (twice the smaller one-sided p)."""
        return float(min(1.0, 2 * min(self.p_above.get(t, 1.0), self.p_below.get(t, 1.0))))

    def text(self) -> str:
        return f"{self.value:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"

    def mde(self, alpha: float = ALPHA, power: float = POWER) -> float:
        """The smallest true effect this design detects with `power` (two-sided `alpha`): (z + z_power) x SE."""
        return detectable_multiple(alpha, power) * self.se


def detectable_multiple(alpha: float = ALPHA, power: float = POWER) -> float:
    """z(1 − alpha/2) + z(power): a minimum detectable effect in standard errors (2.80 at 5% and 80%)."""
    return float(norm.ppf(1 - alpha / 2) + norm.ppf(power))


def _draw_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) multinomial counts: how often each of n questions is drawn in each resample."""
    draws = rng.integers(0, n, size=(resamples, n), dtype=np.int64) + (np.arange(resamples) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n).astype(float)


@functools.lru_cache(maxsize=8)
def _counts(sizes: tuple[int, ...], resamples: int, seed: int) -> tuple[np.ndarray, ...]:
    """Each stratum's counts, from its own random stream (seed, stratum, size): the same for every statistic of a
    sample of these sizes, so repeated estimates on one design reuse them (common random numbers)."""
    return tuple(_draw_counts(n, resamples, np.random.default_rng([seed, i, n])) for i, n in enumerate(sizes))


CACHED = 4_000_000  # resamples x questions up to which the counts are kept (32 MB)


def _replicates(s: Sample, statistic: Statistic, resamples: int, seed: int) -> np.ndarray:
    """The statistic on `resamples` stratified resamples of the questions (multinomial counts within each task)."""
    k, strata = s.values.shape[1], len(s.strata)
    members = [np.flatnonzero(s.stratum == i) for i in range(strata)]
    sizes = tuple(len(m) for m in members)
    chunk = max(1, min(resamples, 4_000_000 // max(sum(sizes), strata * k, 1)))
    cached = _counts(sizes, resamples, seed) if sum(sizes) * resamples <= CACHED else None
    rngs = [np.random.default_rng([seed, i, n]) for i, n in enumerate(sizes)]
    out = []
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        totals = np.zeros((b, strata, k))
        for i, m in enumerate(members):
            if not len(m):
                continue
            counts = cached[i][start : start + b] if cached is not None else _draw_counts(len(m), b, rngs[i])
            totals[:, i, :] = counts @ s.values[m]
        out.append(np.asarray(statistic(totals), dtype=float))
    return np.concatenate(out)


def _jackknife(s: Sample, statistic: Statistic) -> np.ndarray:
    """The statistic with each question left out in turn (for the BCa acceleration)."""
    full = s.totals()
    out = np.empty(s.questions)
    step = max(1, 2_000_000 // max(full.size, 1))
    for start in range(0, s.questions, step):
        idx = np.arange(start, min(start + step, s.questions))
        totals = np.repeat(full[None], len(idx), axis=0)
        totals[np.arange(len(idx)), s.stratum[idx]] -= s.values[idx]
        out[idx] = statistic(totals)
    return out


def _asl(share: float, z0: float, a: float, resamples: int) -> float:
    """The BCa level at which a bound sits where a `share` of the resamples lies beyond it (one-sided p). BCa's
    bounds only reach shares above Φ(z0 − 1/a) when a > 0 (below it when a < 0): beyond that the bound clears the
    threshold at every level (p = 0), or at none (p = 1)."""
    w = norm.ppf(np.clip(share, 0.5 / resamples, 1 - 0.5 / resamples)) - z0
    denom = 1 + a * w
    if denom <= 0:
        return 0.0 if a > 0 else 1.0
    return float(norm.cdf(w / denom - z0))


def estimate(
    s: Sample, statistic: Statistic, thresholds: Sequence[float] = (0.0,), level: float = 1 - ALPHA, seed: int = 0
) -> Estimate:
    """`statistic` on the sample with its BCa interval at `level`, resampling questions within tasks; the
    resample count is raised while a bound is within `MC_SE` Monte Carlo errors of a threshold."""
    point = float(statistic(s.totals()[None])[0]) if s.questions else float("nan")
    base = Estimate(point, float("nan"), float("nan"), float("nan"), level, 0, s.questions, s.rows, s.seeds)
    if not s.questions or not np.isfinite(point):
        return base
    jack = _jackknife(s, statistic)
    jack = jack[np.isfinite(jack)]
    d = jack.mean() - jack if len(jack) else np.zeros(1)
    denom = 6 * float((d**2).sum()) ** 1.5
    a = float((d**3).sum() / denom) if denom > 0 else 0.0
    tail = (1 - level) / 2
    for resamples in RESAMPLES:
        boot = _replicates(s, statistic, resamples, seed)
        boot = np.sort(boot[np.isfinite(boot)])
        if len(boot) < 2 or boot[0] == boot[-1]:  # no spread: every resample gives the point estimate
            spread = float(boot.std()) if len(boot) else float("nan")
            return Estimate(
                point, point, point, spread, level, resamples, s.questions, s.rows, s.seeds,
                {t: 0.0 if point > t else 1.0 for t in thresholds},
                {t: 0.0 if point < t else 1.0 for t in thresholds},
            )  # fmt: skip
        share = (np.searchsorted(boot, point, "left") + np.searchsorted(boot, point, "right")) / (2 * len(boot))
        z0 = float(norm.ppf(np.clip(share, 0.5 / len(boot), 1 - 0.5 / len(boot))))
        levels = []
        for q in (tail, 1 - tail):
            z = z0 + norm.ppf(q)
            levels.append(float(norm.cdf(z0 + z / max(1 - a * z, 1e-9))))
        low, high = (float(v) for v in np.quantile(boot, levels))
        below = {t: np.searchsorted(boot, t, "right") / len(boot) for t in thresholds}  # share <= t
        close = any(abs(below[t] - q) < MC_SE * np.sqrt(q * (1 - q) / len(boot)) for t in thresholds for q in levels)
        if not close:
            break
    above_t = {t: 1 - np.searchsorted(boot, t, "left") / len(boot) for t in thresholds}  # share >= t
    return Estimate(
        point,
        low,
        high,
        float(boot.std(ddof=1)),
        level,
        resamples,
        s.questions,
        s.rows,
        s.seeds,
        {t: _asl(below[t], z0, a, len(boot)) for t in thresholds},
        {t: _asl(above_t[t], -z0, -a, len(boot)) for t in thresholds},
    )


def point(s: Sample, statistic: Statistic) -> float:
    """The statistic on the whole sample (no interval): a seed's own result."""
    return float(statistic(s.totals()[None])[0]) if s.questions else float("nan")


# statistics over totals of the columns (count, sum of a difference), the layout `sample(frame, ["one", "diff"])` makes
def pooled_mean(totals: np.ndarray) -> np.ndarray:
    """Mean difference over every row of every stratum."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return totals[..., :, 1].sum(-1) / totals[..., :, 0].sum(-1)


def stratum_mean(i: int) -> Statistic:
    def mean(totals: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return totals[..., i, 1] / totals[..., i, 0]

    return mean


def contrast(plus: Sequence[int], minus: Sequence[int]) -> Statistic:
    """Mean difference over the rows of the `plus` strata minus that over the rows of the `minus` strata."""
    plus, minus = list(plus), list(minus)

    def stat(totals: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            first = totals[..., plus, 1].sum(-1) / totals[..., plus, 0].sum(-1)
            return first - (totals[..., minus, 1].sum(-1) / totals[..., minus, 0].sum(-1) if minus else 0.0)

    return stat


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (the family-wise error is controlled at any level); NaN stays NaN."""
    p = np.asarray(pvalues, dtype=float)
    finite = np.flatnonzero(np.isfinite(p))
    out = np.full(len(p), np.nan)
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def binomial_above(successes: int, n: int, chance: float) -> float:
    """Exact one-sided p-value that the success rate exceeds `chance` (binomial test)."""
    if n == 0:
        return float("nan")
    return float(binomtest(int(successes), int(n), min(max(chance, 1e-12), 1 - 1e-12), "greater").pvalue)


def binomial_upper(successes: int, n: int, level: float = 1 - ALPHA) -> float:
    """The upper end of the exact (Clopper–Pearson) interval of a success rate at `level`."""
    if n == 0:
        return float("nan")
    return float(binomtest(int(successes), int(n)).proportion_ci(level, "exact").high)


def binomial_mde(n: int, chance: float, alpha: float = ALPHA / 2, power: float = POWER) -> float:
    """How far above `chance` a success rate must be for the exact one-sided test at `alpha` to detect it with
    `power` over `n` independent questions."""
    from scipy.stats import binom

    if n == 0:
        return float("nan")
    counts = np.arange(n + 2)
    critical = int(counts[np.argmax(binom.sf(counts - 1, n, chance) <= alpha)])  # P(X >= k | chance) <= alpha
    lo, hi = chance, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if binom.sf(critical - 1, n, mid) >= power else (mid, hi)
    return float(hi - chance)
