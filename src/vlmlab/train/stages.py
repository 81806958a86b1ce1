"""What each kind of stage does inside a run: the vision tower alone on image labels, or the VLM on VQA sequences.

The trainer looks a stage's runner up by its kind (`config.StageKind`) and calls `run`; the runner uses
the run's state (`RunState`: model, data, accelerator, guard, log, checkpoints) and the shared training step.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Protocol

import torch

from vlmlab import checkpoint as ckpt
from vlmlab.config import RunConfig, StageConfig, own_seed, stage_seed
from vlmlab.data.dataset import IGNORE
from vlmlab.data.loader import batch_loader
from vlmlab.data.order import modality_length, optimizer_steps_before, stage_order
from vlmlab.distributed import all_sum
from vlmlab.models.vision import features
from vlmlab.registry import VISION_ENCODERS
from vlmlab.runs import apply_lora
from vlmlab.train import engines
from vlmlab.train.optim import apply_stage_freezing, build_optimizer
from vlmlab.train.vision_pretrain import run_vision_stage
from vlmlab.training_step import Fault, NonFiniteGuard, StepLoop, TrainingStep, likely_cause, schedule


class RunState(Protocol):
    """What a stage runner reads and advances of the run it is in (the trainer implements it)."""

    cfg: RunConfig
    accelerator: Any
    model: Any  # the VisionLanguageModel
    data: Any  # the VQADataset of data.train (vision-pretrain reads its images)
    sources: list  # (task, items) per data.train source
    guard: NonFiniteGuard
    result: Any  # the TrainResult being filled
    bar: Any  # the progress display
    vision_cache: Path | None
    workers: int  # data loader worker processes
    global_step: int
    wrapped: Any

    def log(self, record: dict) -> None: ...

    def checkpoint(self, optimizer, stage: int, step: int) -> None: ...

    def note_bad_items(self, items: list[tuple[str, str]]) -> None: ...

    def note_dropped(self, items: list[tuple[str, str]]) -> None: ...

    def stage_data(self, s: int) -> Any: ...  # the VQADataset sequence stage `s` trains on

    def last_good_checkpoint(self) -> str | None: ...


class VisionPretraining:
    """`vision-pretrain`: the tower classifies image attributes through throw-away heads (or the result is read
    from a cache of the same tower and recipe). Atomic: a crash inside it re-runs the whole stage."""

    def run(self, t: RunState, s: int, start_step: int, resume_from: Path | None) -> None:
        acc = t.accelerator
        if s == 0 and t.cfg.train.stages[s].seed is not None:  # a later stage continues this one's tower
            _initialize_tower(t.model.vision, t.cfg, s)
        t.result.vision_pretrain = run_vision_stage(
            t.cfg,
            s,
            t.model.vision,
            t.data,
            lambda: t.sources,
            acc.device,
            t.bar,
            study_cache=t.vision_cache,
            write_cache=acc.is_main_process,
        )
        stage = t.cfg.train.stages[s].name
        t.note_bad_items([(f"{stage}/{path}", path) for path in t.result.vision_pretrain.get("bad_images", [])])
        t.log({"stage": stage, **t.result.vision_pretrain})
        t.checkpoint(None, s + 1, 0)


def _initialize_tower(vision, cfg: RunConfig, s: int) -> None:
    """A stage with its own seed starts from the tower that seed initializes (build_model builds the tower first,
    so a run whose seed equals the stage's already holds it), then draws from its own stage seed."""
    torch.manual_seed(own_seed(cfg, s))
    fresh = VISION_ENCODERS.get(cfg.model.vision.id).build(cfg.model.vision.params, image_size=cfg.data.image.size)
    vision.load_state_dict(fresh.state_dict())
    torch.manual_seed(stage_seed(own_seed(cfg, s), s))


class SequenceTraining:
    """`align` and `finetune`: AdamW steps of the VLM over the seeded batch order of `data.train`, with the
    stage's learning rates (0 = frozen), resumable at any checkpointed step."""

    def run(self, t: RunState, s: int, start_step: int, resume_from: Path | None) -> None:
        cfg, acc, model, data = t.cfg, t.accelerator, t.model, t.stage_data(s)
        stage = cfg.train.stages[s]
        apply_lora(model, cfg, up_to_stage=s)
        t.result.trainable[stage.name] = apply_stage_freezing(model, stage)
        engines.after_freezing(acc, model)
        optimizer = build_optimizer(model, stage, cfg.train)
        accum = cfg.train.grad_accum
        world = acc.num_processes
        lengths = [modality_length(it) for it in data.items] if cfg.train.group_by_length != "none" else None
        order, total = stage_order(
            cfg, s, len(data), start_step=start_step, rank=acc.process_index, world=world, lengths=lengths
        )
        t.global_step = start_step + optimizer_steps_before(cfg, s, lambda i: len(t.stage_data(i)), world=world)
        lr_factor = schedule(cfg.train.schedule, int(cfg.train.warmup_ratio * total), total)
        if resume_from is not None and start_step > 0:
            state = ckpt.load_trainer_state(resume_from)
            base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
            ckpt.load_optimizer(optimizer, resume_from, state)
            for g, lr in zip(optimizer.param_groups, base_lrs):  # the config's rates (a resume may change them)
                g["initial_lr"] = lr
            ckpt.set_rng_state(state["rng"])
        loader = batch_loader(data, order, t.workers, pin_memory=acc.device.type == "cuda")
        engines.before_prepare(acc, model)
        wrapped, optimizer = acc.prepare(model, optimizer)
        t.wrapped = wrapped
        wrapped.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        update = TrainingStep(optimizer, trainable, lr_factor, cfg.train.max_grad_norm, t.guard, acc)
        batches = iter(loader)

        def one_step(step: int) -> tuple[float, float] | None:
            group = [next(batches) for _ in range(accum)]
            t.note_bad_items([x for b in group for x in b.bad_items])
            t.note_dropped([x for b in group for x in b.dropped])
            update.begin(step)
            # the loss is the token mean over the whole step (every micro-batch of every process), so 2 processes
            # x b items give the gradient of 1 process x 2b, and grad_accum k x b that of 1 x kb
            targets = max(all_sum(acc, sum(int((b.labels[:, 1:] != IGNORE).sum()) for b in group)), 1)
            step_loss = 0.0
            for i, batch in enumerate(group):
                batch = batch.to(acc.device)
                last = i == accum - 1
                with (
                    acc.no_sync(wrapped) if not last else contextlib.nullcontext(),
                    engines.accumulation_boundary(acc, last),
                ):
                    with acc.autocast():
                        out = wrapped(**batch.model_inputs(), labels=batch.labels)
                    update.backward(out.loss_sum, world / targets * engines.backward_scale(acc, accum))
                step_loss += float(out.loss_sum.detach())
            step_loss = all_sum(acc, step_loss)
            skipped = update.update(lambda: self._fault(t, s, stage, step, lr_factor(step)))
            if skipped is not None:
                t.log({"stage": stage.name, "step": step + 1, **skipped})
            t.global_step += 1
            return None if skipped is not None else (step_loss, targets)

        job = t.bar.add_task(
            f"{stage.name} (stage {s + 1}/{len(cfg.train.stages)})", total=total, completed=start_step, info=""
        )
        started = time.perf_counter()

        def log(done: int, loss: float) -> None:
            t.bar.update(job, info=f"loss {loss:.4f}")
            lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
            t.log(
                {"stage": stage.name, "step": done, "loss": loss, "lr": lrs, "elapsed_s": time.perf_counter() - started}
            )

        loop = StepLoop(
            total,
            start_step,
            log_every=cfg.train.log_every,
            on_log=log,
            bar=t.bar,
            job=job,
            checkpoint_every=cfg.train.checkpoint_every,
            on_checkpoint=lambda done: t.checkpoint(optimizer, s, done),
        )
        t.result.steps += loop.run(one_step)
        if loop.steps_per_s:
            t.result.samples_per_s = loop.steps_per_s * order.global_batch * accum
        t.checkpoint(None, s + 1, 0)  # a stage boundary: the next stage starts a fresh optimizer
        if acc.is_main_process:
            features.flush()  # the frozen tower's features this stage computed, for later runs
        if not engines.keeps_wrapping(acc):
            acc.free_memory()

    @staticmethod
    def _fault(t: RunState, s: int, stage: StageConfig, step: int, factor: float) -> Fault:
        hint = likely_cause(f"train.stages.{s}.lr", stage.lr, factor, t.cfg.train.mixed_precision)
        return Fault(f"train.stages.{s} ({stage.name}) step {step + 1}", hint, t.last_good_checkpoint())


_VISION, _SEQUENCES = VisionPretraining(), SequenceTraining()


def stage_runner(stage: StageConfig) -> VisionPretraining | SequenceTraining:
    """The runner of a stage's kind: sequence stages (`align`, `finetune`) share one; `vision-pretrain` has its own."""
    return _SEQUENCES if stage.kind.on_sequences else _VISION
