"""The trainer: stages of AdamW steps over a seeded batch order, with checkpoints, logs and resume."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator

from vlmlab import checkpoint as ckpt
from vlmlab import io
from vlmlab.config import RunConfig, config_from_dict
from vlmlab.data.dataset import VQADataset
from vlmlab.data.order import stage_order
from vlmlab.data.sources import load_training_sources, training_items
from vlmlab.distributed import all_sum
from vlmlab.environment import environment
from vlmlab.errors import ConfigError, UserError
from vlmlab.models.build import build_model, enable_gradient_checkpointing
from vlmlab.models.vlm import VisionLanguageModel
from vlmlab.progress import progress
from vlmlab.runs import RunDir, apply_lora, init_run, load_run_model, training_fingerprint
from vlmlab.train import engines, trackers
from vlmlab.train.faults import NonFiniteGuard, likely_cause
from vlmlab.train.optim import apply_stage_freezing, build_optimizer, schedule
from vlmlab.train.vision_pretrain import ordered_image_labels, run_vision_stage


@dataclass
class TrainResult:
    model: VisionLanguageModel
    steps: int = 0
    samples_per_s: float = 0.0  # measured over optimizer steps after the first few (warm-up excluded)
    seconds: float = 0.0
    trainable: dict = field(default_factory=dict)
    vision_pretrain: dict = field(default_factory=dict)


def tokenizer_texts(items) -> list[str]:
    """Texts a tiny preset's tokenizer is trained on: every distinct question and answer."""
    return list(dict.fromkeys([it.question for it in items] + [it.answer for it in items]))


class Trainer:
    """Trains `cfg` into `run_dir`. One instance per run; `run()` is resumable with `resume=True`."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, resume: bool = False, vision_cache: Path | None = None):
        init_run(cfg)  # a run to start from must be finished
        self.cfg = cfg  # resolved: measured fields (DPVR `layer: auto`) were filled in by the caller
        self.run = RunDir(run_dir)
        self.resume = resume
        self.vision_cache = vision_cache  # share vision-pretrain stages with runs that compute the same tower
        trackers.check_installed(cfg.train.trackers)
        self.accelerator = _accelerator(cfg.train.mixed_precision, cfg.train.trackers, self.run.path)

    # ----- set-up -------------------------------------------------------------------------
    def _check_run_dir(self) -> None:
        if not self.cfg.data.train:
            raise ConfigError("data.train", "missing: no training data configured")
        if not self.cfg.train.stages:
            raise ConfigError("train.stages", "missing: no training stages configured")
        if self.run.config.is_file():
            if not self.resume:
                raise UserError(
                    f"{self.run.path}: already holds a run; pass --resume to continue it or choose another --out"
                )
            saved = config_from_dict(yaml.safe_load(self.run.config.read_text()))
            if saved.resolved() != self.cfg.resolved():
                key = _first_difference(saved.resolved(), self.cfg.resolved())
                raise UserError(f"{self.run.path}: --resume with a different config ({key} changed)", exit_code=2)

    def _build(self, items) -> VisionLanguageModel:
        tok_dir = self.run.tokenizer if self.run.tokenizer.is_dir() else None
        init = init_run(self.cfg)
        if init is not None:
            tok_dir = tok_dir or (init.tokenizer if init.tokenizer.is_dir() else None)
        model = build_model(
            self.cfg, tokenizer_dir=tok_dir, texts=tokenizer_texts(items), pretrained_weights=init is None
        )
        if init is not None:
            if ckpt.load_weights(model, init.final / ckpt.WEIGHTS, may_miss=("routing.",)):
                model.routing.llm_weights_loaded(model.llm)  # e.g. a DPVR branch copies the *trained* layer k
        if self.cfg.train.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        return model

    def _write_run_files(self, model: VisionLanguageModel) -> None:
        """The run dir is created only now, after the config, data and model all checked out."""
        self.run.path.mkdir(parents=True, exist_ok=True)
        if not self.accelerator.is_main_process:
            return
        if not self.run.tokenizer.is_dir():
            tmp = self.run.path / ".tokenizer.tmp"
            model.llm.save_tokenizer(tmp)
            tmp.rename(self.run.tokenizer)
        io.write_yaml(self.run.config, self.cfg.resolved())
        self._record_environment()

    # ----- the loop -----------------------------------------------------------------------
    def run_training(self) -> TrainResult:
        cfg, acc = self.cfg, self.accelerator
        self._check_run_dir()
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.sources = load_training_sources(cfg)
        items = training_items(self.sources)
        model = self._build(items)
        engines.configure(self.accelerator, cfg, model)
        data = VQADataset(items, model.llm, cfg.data.image, model.num_image_tokens, with_answers=True)
        self._write_run_files(model)
        self.global_step = 0  # optimizer steps over all stages: the x axis of the trackers
        if cfg.train.trackers:
            trackers.start(acc, cfg, self.run.path)

        start_stage, start_step, resume_from, self.log_lines = 0, 0, None, 0
        self.guard = NonFiniteGuard(cfg.train.on_nonfinite.policy, cfg.train.on_nonfinite.max_skips)
        if self.resume:
            ckpt.remove_partial(self.run.path)  # what a killed process left half-written
        if self.resume and (latest := ckpt.latest_checkpoint(self.run.path)) is not None:
            resume_from = latest
            state = ckpt.load_trainer_state(latest)
            start_stage, start_step = state["stage"], state["step"]
            self.guard.skipped = state.get("nonfinite_skipped", 0)
            self.log_lines = state.get("log_lines", 0)
        if self.resume and acc.is_main_process:  # the log is cut back to the checkpoint it continues from
            io.truncate_lines(self.run.train_log, self.log_lines)
            apply_lora(model, cfg, up_to_stage=start_stage)
            ckpt.load_weights(model, latest / ckpt.WEIGHTS)
        model.to(acc.device)

        result = TrainResult(model=model)
        self.wrapped = None  # the engine-wrapped model of the current stage (FSDP / DeepSpeed gather from it)
        t0 = time.perf_counter()
        with progress(disable=not acc.is_main_process) as bar:
            for s in range(start_stage, len(cfg.train.stages)):
                self._train_stage(
                    model,
                    data,
                    s,
                    start_step if s == start_stage else 0,
                    resume_from if s == start_stage else None,
                    bar,
                    result,
                )
        result.seconds = time.perf_counter() - t0
        # the run is complete once `final` exists; it names the config it was trained from
        self._save(
            self.run.final,
            model,
            None,
            {
                "stage": len(cfg.train.stages),
                "step": 0,
                "done": True,
                "log_lines": self.log_lines,
                "training_fingerprint": training_fingerprint(cfg.resolved()),
            },
        )
        acc.wait_for_everyone()  # no process moves on (e.g. to evaluate) before the final weights exist
        if cfg.train.trackers:
            acc.end_training()
        if engines.sharded(acc):  # the trained model is in shards: evaluate a whole copy read back from `final`
            self.wrapped = result.model = None
            acc.free_memory(model)
            del model
            result.model = load_run_model(self.run.path, device=acc.device)[0]
        if acc.is_main_process:
            self._write_train_info(result)
        return result

    def _write_train_info(self, result: TrainResult) -> None:
        """`train.json`: what training took (steps, seconds, samples/s, trainable parameters per stage) and what
        was trained (parameters per part, the vision-pretrain metrics, the LLM rung's pretraining summary)."""
        model = result.model
        parts = ("vision", "projector", "llm")
        io.write_json(
            self.run.train_info,
            {
                "steps": result.steps,
                "seconds": result.seconds,
                "samples_per_s": result.samples_per_s,
                "trainable": result.trainable,
                "vision_pretrain": result.vision_pretrain,
                "parameters": {g: sum(p.numel() for p in getattr(model, g).parameters()) for g in parts},
                "llm_pretraining": model.llm.pretraining,
            },
        )

    def _train_stage(self, model, data, s, start_step, resume_from, bar, result) -> None:
        cfg, acc = self.cfg, self.accelerator
        stage = cfg.train.stages[s]
        if resume_from is None or start_step == 0:  # a stage's randomness depends only on (seed, stage),
            torch.manual_seed(cfg.seed * 1000 + s)  # not on what earlier stages or other parts drew
        if stage.name == "vision-pretrain":  # atomic: a crash inside it re-runs the whole stage
            self._pretrain_vision(model, data, s, bar, result)
            self._log({"stage": stage.name, **result.vision_pretrain})
            self._checkpoint(model, None, s + 1, 0)
            return
        apply_lora(model, cfg, up_to_stage=s)
        result.trainable[stage.name] = apply_stage_freezing(model, stage)
        engines.after_freezing(acc, model)
        optimizer = build_optimizer(model, stage, cfg.train)
        accum = cfg.train.grad_accum
        order, total = stage_order(
            cfg, s, len(data), start_step=start_step, rank=acc.process_index, world=acc.num_processes
        )
        micro = order.global_batch  # samples per micro-step over all processes
        self.global_step = start_step + sum(
            stage_order(cfg, i, len(data), world=acc.num_processes)[1]
            for i in range(s)
            if cfg.train.stages[i].name != "vision-pretrain"
        )
        lr_factor = schedule(cfg.train.schedule, int(cfg.train.warmup_ratio * total), total)
        if resume_from is not None and start_step > 0:
            state = ckpt.load_trainer_state(resume_from)
            ckpt.load_optimizer(optimizer, resume_from, state)
            ckpt.set_rng_state(state["rng"])
        loader = torch.utils.data.DataLoader(data, batch_sampler=order, collate_fn=data.collate)
        engines.before_prepare(acc, model)
        wrapped, optimizer = acc.prepare(model, optimizer)
        self.wrapped = wrapped
        wrapped.train()
        trainable = [p for p in model.parameters() if p.requires_grad]

        job = bar.add_task(
            f"{stage.name} (stage {s + 1}/{len(self.cfg.train.stages)})", total=total, completed=start_step, info=""
        )
        step, loss_sum, loss_n = start_step, 0.0, 0
        guard = self.guard
        timed_from, timed_samples, t_start = None, 0, time.perf_counter()
        micro_batches = iter(loader)
        while step < total:
            group = [next(micro_batches) for _ in range(accum)]
            for g in optimizer.param_groups:  # the schedule is a pure function of the step: nothing to save
                g["lr"] = g["initial_lr"] * lr_factor(step)
            # the loss is the token mean over the whole step (every micro-batch of every process), so 2 processes
            # x b items give the gradient of 1 process x 2b, and grad_accum k x b that of 1 x kb
            targets = max(all_sum(acc, sum(int((b.labels[:, 1:] != -100).sum()) for b in group)), 1)
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
                    guard.micro_loss(out.loss_sum)
                    # even a bad loss goes through backward: every process runs the same collectives
                    acc.backward(out.loss_sum * (acc.num_processes / targets * engines.backward_scale(acc, accum)))
                step_loss += float(out.loss_sum.detach())
            step_loss = all_sum(acc, step_loss)
            if cfg.train.max_grad_norm is not None:
                norm = acc.clip_grad_norm_(trainable, cfg.train.max_grad_norm)
            else:
                norm = torch.nn.utils.get_total_norm([p.grad for p in trainable if p.grad is not None])
            if acc.scaler is None and norm is not None:  # fp16's loss scaler drops overflowing steps itself
                guard.grad_norm(float(norm))
            if guard.step_is_bad(acc):
                optimizer.zero_grad(set_to_none=True)
                latest = ckpt.latest_checkpoint(self.run.path)
                event = guard.handle(
                    f"train.stages.{s} ({stage.name}) step {step + 1}",
                    likely_cause(f"train.stages.{s}", stage.lr, lr_factor(step), cfg.train.mixed_precision),
                    str(latest.relative_to(self.run.path)) if latest else None,
                )
                self._log({"stage": stage.name, "step": step + 1, **event})
            else:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                loss_sum += step_loss
                loss_n += targets
            step += 1
            self.global_step += 1
            if step - start_step == 3:  # time from here on: skips one-off start-up costs
                timed_from, timed_samples = time.perf_counter(), 0
            elif timed_from is not None:
                timed_samples += micro * accum
            if step % cfg.train.log_every == 0 or step == total:
                mean_loss = loss_sum / loss_n if loss_n else float("nan")
                bar.update(job, info=f"loss {mean_loss:.4f}")
                self._log(
                    {
                        "stage": stage.name,
                        "step": step,
                        "loss": mean_loss,
                        "lr": {g["name"]: g["lr"] for g in optimizer.param_groups},
                        "elapsed_s": time.perf_counter() - t_start,
                    }
                )
                loss_sum, loss_n = 0.0, 0
            bar.update(job, completed=step)
            if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0 and step < total:
                self._checkpoint(model, optimizer, s, step)
        if timed_from is not None and timed_samples:
            result.samples_per_s = timed_samples / (time.perf_counter() - timed_from)
        result.steps += step - start_step
        self._checkpoint(model, None, s + 1, 0)  # a stage boundary: the next stage starts a fresh optimizer
        if not engines.keeps_wrapping(acc):
            acc.free_memory()

    def _pretrain_vision(self, model, data, s, bar, result) -> None:
        result.vision_pretrain = run_vision_stage(
            self.cfg,
            s,
            model.vision,
            data,
            lambda: ordered_image_labels(self.sources),
            self.accelerator.device,
            bar,
            study_cache=self.vision_cache,
            write_cache=self.accelerator.is_main_process,
        )

    def _record_environment(self) -> None:
        """`environment.json`: the seed and where the run was trained; a resume elsewhere is added, not hidden."""
        env, path = environment(), self.run.environment
        record = (
            io.read_json(path)
            if self.resume and path.is_file()
            else {"seed": self.cfg.seed, "trained_on": env, "resumed_on": []}
        )
        if env != record["trained_on"] and env not in record["resumed_on"]:
            record["resumed_on"].append(env)
        io.write_json(path, record)

    def _log(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            io.append_jsonl(self.run.train_log, record)
            self.log_lines += 1
        if self.cfg.train.trackers:
            trackers.log(self.accelerator, record, self.global_step)

    def _checkpoint(self, model, optimizer, stage: int, step: int) -> None:
        self._save(
            self.run.checkpoints / f"step-{stage:02d}{step:08d}",
            model,
            optimizer,
            {
                "stage": stage,
                "step": step,
                "nonfinite_skipped": self.guard.skipped,
                "log_lines": self.log_lines,
            },
        )
        if self.accelerator.is_main_process:
            ckpt.prune_checkpoints(self.run.path, keep=2)

    def _save(self, directory: Path, model, optimizer, state: dict) -> None:
        """Every process takes part in gathering sharded weights (FSDP / DeepSpeed); the main process writes."""
        weights = engines.full_state_dict(self.accelerator, self.wrapped)
        if self.accelerator.is_main_process:
            ckpt.save_checkpoint(directory, model, optimizer, state, weights=weights)


def _accelerator(mixed_precision: str, log_with: list[str], run_dir: Path) -> Accelerator:
    """An Accelerator for this run. accelerate keeps one process-wide state; runs in one process that
    ask for another precision (a study's variants, tests) reset its precision part, not the process group."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration

    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    project = ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "tensorboard"))
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=mixed_precision,
        log_with=list(log_with) or None,
        project_config=project,
    )


def _first_difference(a, b, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
    return prefix or "<root>"
