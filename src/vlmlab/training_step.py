"""One training step and the loop around it, shared by every kind of training vlmlab does.

VLM stages (`train.trainer`), vision-tower pretraining (`train.vision_pretrain`) and LM pretraining of
the tiny ladder (`lm.pretrain`) differ in their data, model and optimizer groups; what happens in a
step does not: the learning rate is set from a schedule that is a pure function of the step, the
micro-batch losses go through backward, gradients are clipped, the non-finite guard decides whether the
update happens, and the loop around the steps shows progress, logs a window mean of the loss and calls
checkpoint hooks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from vlmlab.distributed import all_sum
from vlmlab.errors import UserError


def schedule(kind: str, warmup_steps: int, total_steps: int, floor: float = 0.0) -> Callable[[int], float]:
    """Multiplier of the base lr at each optimizer step: linear warmup, then cosine/linear decay to `floor`
    (a fraction of the base lr), or constant."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if kind == "linear":
            return floor + (1 - floor) * (1.0 - progress)
        return floor + (1 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


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

    def step_is_bad(self, accelerator=None) -> bool:
        """Whether this step must not update; every process agrees (a fault on one rank is a fault on all)."""
        bad = (
            all_sum(accelerator, float(self._cause is not None)) if accelerator else float(self._cause is not None)
        ) > 0
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


def likely_cause(
    lr_key: str,
    lr: dict[str, float],
    factor: float,
    mixed_precision: str = "no",
    warmup_key: str = "train.warmup_ratio",
) -> str:
    """What to try first, as config keys: the learning rates (and where the schedule stood), the precision."""
    rates = ", ".join(f"{g} {v:g}" for g, v in lr.items() if v > 0) or "none"
    tips = [
        f"learning rate too high ({lr_key}: {rates}, at {factor:.2f}x by the schedule; lower it or raise {warmup_key})"
    ]
    if mixed_precision != "no":
        tips.append(f"{mixed_precision} overflow (try train.mixed_precision: no)")
    else:
        tips.append("bad values in the batch")
    return "; or ".join(tips)


@dataclass
class Fault:
    """Where a step runs, for the guard's message: a description of the step, the likely cause, the last good
    checkpoint (relative path, or None)."""

    where: str
    hint: str
    last_good: str | None = None


class TrainingStep:
    """One optimizer update from one or more micro-batch losses.

    `begin(step)` sets every group's lr to its base (`initial_lr`) times `lr_factor(step)`; `backward(loss)`
    per micro-batch; `update(fault)` clips to `max_grad_norm`, lets the guard judge the step and either
    steps the optimizer (returns None) or drops the update (returns the guard's log record; raises
    NumericalFault under `stop`). With an accelerate `accelerator`, backward and clipping go through it
    (mixed precision, sharded engines) and the guard's verdict is agreed by every process.
    """

    def __init__(
        self,
        optimizer,
        params: list[torch.nn.Parameter],
        lr_factor: Callable[[int], float],
        max_grad_norm: float | None,
        guard: NonFiniteGuard,
        accelerator=None,
    ):
        self.optimizer, self.params, self.lr_factor = optimizer, params, lr_factor
        self.max_grad_norm, self.guard, self.accelerator = max_grad_norm, guard, accelerator
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])

    def begin(self, step: int) -> None:
        for g in self.optimizer.param_groups:  # the schedule is a pure function of the step: nothing to save
            g["lr"] = g["initial_lr"] * self.lr_factor(step)

    def backward(self, loss: torch.Tensor, scale: float | None = None) -> None:
        """Backward of `loss` (times `scale`); a non-finite loss still goes through it, so every process runs the
        same collectives, and is reported by the guard at `update`."""
        self.guard.micro_loss(loss)
        scaled = loss if scale is None else loss * scale
        if self.accelerator is not None:
            self.accelerator.backward(scaled)
        else:
            scaled.backward()

    def update(self, fault: Callable[[], Fault]) -> dict[str, Any] | None:
        acc = self.accelerator
        if self.max_grad_norm is not None:
            clip = acc.clip_grad_norm_ if acc is not None else torch.nn.utils.clip_grad_norm_
            norm = clip(self.params, self.max_grad_norm)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        if (
            acc is None or acc.scaler is None
        ) and norm is not None:  # fp16's loss scaler drops overflowing steps itself
            self.guard.grad_norm(float(norm))
        if self.guard.step_is_bad(acc):
            self.optimizer.zero_grad(set_to_none=True)
            f = fault()
            return self.guard.handle(f.where, f.hint, f.last_good)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return None


@dataclass
class StepLoop:
    """Steps `start .. total-1` of one stage: progress, a window mean of the loss logged every `log_every` steps
    (and at the last), a checkpoint hook every `checkpoint_every` steps (not at the last: the stage's end is
    its own checkpoint), and the steps per second after the first `warmup` steps (start-up costs excluded).

    `step_fn(step)` runs one step and returns (loss total, weight) for the window — a token-summed loss and
    its token count, or a mean loss and 1 — or None when the guard dropped the update."""

    total: int
    start: int = 0
    log_every: int | None = None
    on_log: Callable[[int, float], None] | None = None  # (steps done, window mean loss)
    checkpoint_every: int | None = None
    on_checkpoint: Callable[[int], None] | None = None  # (steps done)
    bar: Any = None
    job: Any = None
    warmup: int = 3
    steps_per_s: float = 0.0

    def run(self, step_fn: Callable[[int], tuple[float, float] | None]) -> int:
        """Run the steps; returns how many ran."""
        loss_sum, weight = 0.0, 0.0
        timed_from, timed_steps = None, 0
        step = self.start
        while step < self.total:
            out = step_fn(step)
            if out is not None:
                loss_sum, weight = loss_sum + out[0], weight + out[1]
            step += 1
            if step - self.start == self.warmup:  # time from here on: skips one-off start-up costs
                timed_from, timed_steps = time.perf_counter(), 0
            elif timed_from is not None:
                timed_steps += 1
            if self.log_every and (step % self.log_every == 0 or step == self.total):
                if self.on_log is not None:
                    self.on_log(step, loss_sum / weight if weight else float("nan"))
                loss_sum, weight = 0.0, 0.0
            if self.bar is not None:
                self.bar.update(self.job, completed=step)
            if self.checkpoint_every and step % self.checkpoint_every == 0 and step < self.total:
                self.on_checkpoint(step)
        if timed_from is not None and timed_steps:
            self.steps_per_s = timed_steps / (time.perf_counter() - timed_from)
        return step - self.start
