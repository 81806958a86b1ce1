"""Numerical faults: a non-finite loss or gradient is caught at the step it occurs, then skipped or stopped on."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from vlmlab.distributed import all_sum
from vlmlab.errors import UserError


class NumericalFault(UserError):
    """Training stopped on a non-finite loss or gradient; the last good checkpoint is kept."""


@dataclass
class NonFiniteGuard:
    """Watches one optimizer step at a time: `micro_loss` per micro-batch, `grad_norm` before the update.

    `policy` is `stop` (raise NumericalFault) or `skip` (drop the update, up to `max_skips` times per run).
    `skipped` counts the updates dropped so far; it is saved with each checkpoint so a resumed run keeps it.
    """

    policy: str = "stop"
    max_skips: int = 0
    skipped: int = 0
    _cause: str | None = field(default=None, repr=False)

    def micro_loss(self, loss: torch.Tensor) -> None:
        if self._cause is None and not torch.isfinite(loss.detach()).all():
            self._cause = f"non-finite loss ({float(loss.detach().float().mean())})"

    def grad_norm(self, norm: float) -> None:
        """Record the step's total gradient norm (inf/nan if any entry is)."""
        if self._cause is None and not math.isfinite(norm):
            self._cause = f"non-finite gradient (norm {norm})"

    def step_is_bad(self, accelerator) -> bool:
        """Whether this step must not update; every process agrees (a fault on one rank is a fault on all)."""
        bad = all_sum(accelerator, float(self._cause is not None)) > 0
        if bad and self._cause is None:
            self._cause = "non-finite loss or gradient on another process"
        return bad

    def handle(self, where: str, hint: str, last_good: str | None) -> dict[str, Any]:
        """Skip this step (returns the log record) or raise NumericalFault, per the policy."""
        cause, self._cause = self._cause, None
        if self.policy == "skip" and self.skipped < self.max_skips:
            self.skipped += 1
            return {"event": "skipped-step", "cause": cause, "skipped": self.skipped, "max_skips": self.max_skips}
        over = f" after skipping {self.skipped} (train.on_nonfinite.max_skips)" if self.policy == "skip" else ""
        kept = f"last good checkpoint {last_good}" if last_good else "no checkpoint was written before it"
        raise NumericalFault(f"{where}: {cause}{over}; training stopped, {kept}. Likely cause: {hint}")

    def clear(self) -> None:
        self._cause = None


def likely_cause(stage_key: str, lr: dict[str, float], factor: float, mixed_precision: str) -> str:
    """What to try first, as config keys: the stage's learning rates (and where the schedule stood), the precision."""
    rates = ", ".join(f"{g} {v:g}" for g, v in lr.items() if v > 0) or "none"
    tips = [
        f"learning rate too high ({stage_key}.lr: {rates}, at {factor:.2f}x by the schedule; lower it or raise train.warmup_ratio)"
    ]
    if mixed_precision != "no":
        tips.append(f"{mixed_precision} overflow (try train.mixed_precision: no)")
    else:
        tips.append("bad values in the batch")
    return "; or ".join(tips)
