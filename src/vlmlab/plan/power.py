"""How small a paired difference a study can detect, and how many questions or seeds a stated effect needs.

The model of a paired comparison (variant B minus variant A on the same questions): the difference on
question q under seed s is d_qs = mu + u_q + v_s + e_qs, where u_q is the question's own effect (it does not
average away over seeds), e_qs the seed-to-seed noise of that question (it does), and v_s a shift of the whole
seed (what "shown by every seed alone" guards against). With `sd_paired`^2 = var(u_q + e_qs) within one seed,
`seed_share` = var(e) / `sd_paired`^2 and `sd_seed` = sd(v), the mean over n questions and k seeds has

    SE^2 = sd_paired^2 (1 - seed_share + seed_share / k) / n + sd_seed^2 / k

and a two-sided test at level alpha detects mu with probability `power` when |mu| >= (z_{1-alpha/2} + z_power) SE
(the normal approximation behind "plan sample sizes with a power analysis" in "Adding Error Bars to Evals",
Miller, arXiv 2411.00640). The verdicts' paired bootstrap over questions has the same large-sample SE.

These three functions (`minimum_detectable_effect`, `questions_needed`, `seeds_needed`) are the project's one
power interface; the multiple of the standard error is `vlmlab.analysis.inference.detectable_multiple`, the same
one every verdict's own MDE (`Estimate.mde`) uses.
"""

from __future__ import annotations

import math

from vlmlab.analysis.inference import ALPHA, POWER, detectable_multiple


def _z(alpha: float, power: float) -> float:
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha ({alpha}) and power ({power}) must lie in (0, 1)")
    return detectable_multiple(alpha, power)


def standard_error(
    sd_paired: float, n_questions: int, n_seeds: int = 1, seed_share: float = 0.0, sd_seed: float = 0.0
) -> float:
    """SE of the mean paired difference over `n_questions` questions and `n_seeds` seeds (see the module doc)."""
    if n_questions < 1 or n_seeds < 1:
        raise ValueError("n_questions and n_seeds must be at least 1")
    share = min(max(seed_share, 0.0), 1.0)
    per_question = sd_paired**2 * (1 - share + share / n_seeds)
    return math.sqrt(per_question / n_questions + sd_seed**2 / n_seeds)


def minimum_detectable_effect(
    sd_paired: float,
    n_questions: int,
    n_seeds: int = 1,
    alpha: float = ALPHA,
    power: float = POWER,
    seed_share: float = 0.0,
    sd_seed: float = 0.0,
) -> float:
    """The smallest true paired difference (in accuracy units) a two-sided test at `alpha` finds with `power`."""
    return _z(alpha, power) * standard_error(sd_paired, n_questions, n_seeds, seed_share, sd_seed)


def questions_needed(
    effect: float,
    sd_paired: float,
    n_seeds: int = 1,
    alpha: float = ALPHA,
    power: float = POWER,
    seed_share: float = 0.0,
    sd_seed: float = 0.0,
) -> int | None:
    """Questions (per comparison) for `effect` to be detectable at `n_seeds` seeds; None when the seeds' own
    noise (`sd_seed`) already exceeds the budget, so no number of questions suffices."""
    budget = (abs(effect) / _z(alpha, power)) ** 2 - sd_seed**2 / n_seeds
    if budget <= 0:
        return None
    share = min(max(seed_share, 0.0), 1.0)
    return max(1, math.ceil(sd_paired**2 * (1 - share + share / n_seeds) / budget))


def seeds_needed(
    effect: float,
    sd_paired: float,
    n_questions: int,
    alpha: float = ALPHA,
    power: float = POWER,
    seed_share: float = 0.0,
    sd_seed: float = 0.0,
    most: int = 64,
) -> int | None:
    """The fewest seeds (up to `most`) at which `effect` is detectable on `n_questions` questions; None if even
    `most` do not suffice (the questions' own differences, which seeds do not average away, are too noisy)."""
    for k in range(1, most + 1):
        if minimum_detectable_effect(sd_paired, n_questions, k, alpha, power, seed_share, sd_seed) <= abs(effect):
            return k
    return None
