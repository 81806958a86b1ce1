"""The trainer: a run's stages in order (each run by its kind's runner, `train.stages`), with checkpoints, logs and
exact resume."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator

from vlmlab import checkpoint as ckpt
from vlmlab import io
from vlmlab.config import RunConfig, own_seed, read_yaml, stage_seed
from vlmlab.data.bad_images import BadImages
from vlmlab.data.dataset import VQADataset
from vlmlab.data.loader import image_cache_bytes, resolve_workers
from vlmlab.data.order import stage_steps
from vlmlab.data.sources import load_stage_items, load_training_sources, stage_data_key, training_items
from vlmlab.distributed import all_sum
from vlmlab.environment import environment
from vlmlab.errors import ConfigError, UserError
from vlmlab.locks import exclusive
from vlmlab.models.build import build_model, enable_gradient_checkpointing
from vlmlab.models.footprint import Footprint, check_fits, training_footprints
from vlmlab.models.llm.box_tokens import add_box_tokens
from vlmlab.models.sharding import largest_unit_bytes, per_process
from vlmlab.models.vlm import VisionLanguageModel
from vlmlab.progress import console, progress
from vlmlab.run_layout import FINGERPRINT
from vlmlab.runs import (
    RunDir,
    apply_lora,
    init_config,
    init_run,
    load_run_model,
    resume_differences,
    training_fingerprint,
)
from vlmlab.train import engines, trackers
from vlmlab.train.stages import stage_runner
from vlmlab.training_step import NonFiniteGuard

LONG_STAGE_STEPS = 10_000_000  # a sequence stage longer than this is most likely a typo'd `epochs`: warn


@dataclass
class TrainResult:
    model: VisionLanguageModel
    steps: int = 0
    samples_per_s: float = 0.0  # measured over optimizer steps after the first few (warm-up excluded)
    seconds: float = 0.0
    trainable: dict = field(default_factory=dict)
    vision_pretrain: dict = field(default_factory=dict)
    stage_seconds: dict = field(default_factory=dict)  # `<index>:<name>` -> seconds of the stages this process ran


def tokenizer_texts(items) -> list[str]:
    """Texts a tiny preset's tokenizer is trained on: every distinct question and answer (then the later turns
    of conversations)."""
    later = [text for it in items for turn in it.turns[1:] for text in turn]
    return list(dict.fromkeys([it.question for it in items] + [it.answer for it in items] + later))


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
        # the run's state while it trains (set up by run_training; the stage runners read and advance it)
        self.sources: list = []  # (task, items) per data.train source
        self.model: VisionLanguageModel | None = None
        self.data: VQADataset | None = None
        self.wrapped = None  # the engine-wrapped model of the current stage (FSDP / DeepSpeed gather from it)
        self.guard = NonFiniteGuard(cfg.train.on_nonfinite.policy, cfg.train.on_nonfinite.max_skips)
        self.result: TrainResult | None = None
        self.bar = None  # the progress display
        self.global_step = 0  # optimizer steps over all stages: the x axis of the trackers
        self.log_lines = 0  # lines of train_log.jsonl written (a checkpoint records them, resume cuts back to them)
        self.recipe_changes: dict[str, list] = {}  # recipe keys a resume changed: [old, new] (provenance)
        self.dropped: dict[str, str] = {}  # rows too long for train.max_length: item -> why
        self.workers = 0  # data loader worker processes (data.workers, resolved when training starts)
        self.datasets: dict[str, VQADataset] = {}  # the sequences each stage's data key names

    # ----- set-up -------------------------------------------------------------------------
    def _check_run_dir(self) -> None:
        if not self.cfg.data.train:
            raise ConfigError("data.train", "missing: no training data configured")
        if not self.cfg.train.stages:
            raise ConfigError("train.stages", "missing: no training stages configured")
        if not self.run.config.is_file():
            return
        if not self._has_progress():  # an earlier start failed or was killed before its first checkpoint
            console.print(
                f"{self.run.path}: no checkpoint yet (an earlier start stopped before one); starting afresh",
                soft_wrap=True,
                highlight=False,
            )
            self._clear_unstarted()
            self.resume = False
            return
        if not self.resume:
            raise UserError(
                f"{self.run.path}: already holds a run; pass --resume to continue it or choose another --out"
            )
        saved = read_yaml(self.run.config)
        self.recipe_changes, refused = resume_differences(saved, self.cfg.resolved())
        if refused is not None:
            raise UserError(
                f"{self.run.path}: --resume with a different config ({refused} changed; a resume may change only "
                "learning rates, warmup, train.on_nonfinite and the bad-image policy)",
                exit_code=2,
            )

    def _has_progress(self) -> bool:
        return (self.run.final / ckpt.STATE).is_file() or ckpt.latest_checkpoint(self.run.path) is not None

    def _clear_unstarted(self) -> None:
        """Remove what a start that never reached a checkpoint wrote (files of other programs are left alone)."""
        for path in self.run.written_at_start():
            io.remove_tree(path)  # a link is removed as a link, never followed

    def _build(self, items) -> VisionLanguageModel:
        tok_dir = self.run.tokenizer if self.run.tokenizer.is_dir() else None
        init = init_run(self.cfg)
        if init is not None:
            tok_dir = tok_dir or (init.tokenizer if init.tokenizer.is_dir() else None)
        # location tokens added on top of a run trained without them: build and load that run's shapes, then grow
        grow = init is not None and self.cfg.model.box_tokens and not init_config(init).model.box_tokens
        cfg = (
            self.cfg.model_copy(update={"model": self.cfg.model.model_copy(update={"box_tokens": False})})
            if grow
            else self.cfg
        )
        model = build_model(cfg, tokenizer_dir=tok_dir, texts=tokenizer_texts(items), pretrained_weights=init is None)
        if init is not None:
            ckpt.verify(init.final, run=init.path, outputs=self.run.path)
            if ckpt.load_weights(model, init.final / ckpt.WEIGHTS, may_miss=("routing.",)):
                model.routing.llm_weights_loaded(model.llm)  # e.g. a DPVR branch copies the *trained* layer k
        if grow:
            add_box_tokens(model.llm)
        if self.cfg.train.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        return model

    def _dataset(self, items, model: VisionLanguageModel) -> VQADataset:
        cfg = self.cfg
        return VQADataset(
            items,
            model.llm,
            cfg.data.image,
            model.num_image_tokens,
            with_answers=True,
            on_bad_image=cfg.data.on_bad_image,
            max_length=cfg.train.max_length,
            image_cache_bytes=image_cache_bytes(self.workers),
        )

    def stage_data(self, s: int) -> VQADataset:
        """The sequences stage `s` trains on (its own `data`, else data.train)."""
        return self.datasets[stage_data_key(self.cfg, s)]

    def _preflight(self, model: VisionLanguageModel) -> None:
        """Before the run dir exists: refuse what cannot fit in memory, and warn of a stage that would run for an
        absurd number of steps (a typo'd `epochs`)."""
        cfg = self.cfg
        if cfg.train.memory_check:
            extents = {key: data.extent() for key, data in self.datasets.items()}
            per_stage = [
                extents[stage_data_key(cfg, s) if stage.kind.on_sequences else "data.train"]
                for s, stage in enumerate(cfg.train.stages)
            ]
            footprints = training_footprints(model, cfg, per_stage, extents["data.train"])
            check_fits(self._per_process(model, footprints), what=f"the run {cfg.name!r}")
        world = self.accelerator.num_processes
        for s, stage in enumerate(cfg.train.stages):
            if not stage.kind.on_sequences or stage.max_steps is not None:
                continue
            micro = (stage.batch_size or cfg.train.batch_size) * world
            n = len(self.stage_data(s))
            steps = stage_steps(stage, n, micro, cfg.train.grad_accum)
            if steps > LONG_STAGE_STEPS:
                console.print(
                    f"[yellow]warning[/yellow]: train.stages.{s}.epochs={stage.epochs:g} means {steps:,} optimizer "
                    f"steps over {n:,} items; set max_steps or fewer epochs if that is not intended",
                    soft_wrap=True,
                    highlight=False,
                )

    def _per_process(self, model: VisionLanguageModel, footprints: list[Footprint]) -> list[Footprint]:
        """The training stages' estimates as one process holds them under the launcher's engine (FSDP and ZeRO
        shard weights, gradients and optimizer state); evaluation, on the whole model, stays as it is."""
        world = self.accelerator.num_processes
        if world == 1:
            return footprints
        how, unit, n = engines.strategy(self.accelerator), largest_unit_bytes(model), len(self.cfg.train.stages)
        trained = [f.parts.get("gradients + AdamW state", 0) // 12 for f in footprints[:n]]
        return [per_process(f, how, world, unit, t) for f, t in zip(footprints[:n], trained)] + footprints[n:]

    def _write_run_files(self, model: VisionLanguageModel) -> None:
        """The run dir is created only now, after the config, data and model all checked out."""
        self.run.path.mkdir(parents=True, exist_ok=True)
        if not self.accelerator.is_main_process:
            return
        if not self.run.tokenizer.is_dir():
            with io.atomic_dir(self.run.tokenizer) as tmp:  # a fresh temp dir: nothing there can redirect it
                model.llm.save_tokenizer(tmp)
        io.write_yaml(self.run.config, self.cfg.resolved())
        self._record_environment()

    # ----- the run ------------------------------------------------------------------------
    def run_training(self) -> TrainResult:
        """Train every stage not yet done, holding the run's lock (one writer per run, main process)."""
        lock = exclusive(self.run.path, "run", console.print) if self.accelerator.is_main_process else nullcontext()
        with lock:
            return self._run_training()

    def _run_training(self) -> TrainResult:
        cfg, acc = self.cfg, self.accelerator
        self._check_run_dir()
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.sources = load_training_sources(cfg)
        items = {"data.train": training_items(self.sources, cfg.data.train)}
        for s, stage in enumerate(cfg.train.stages):  # a sequence stage may train on its own data (LLaVA's align)
            if stage.kind.on_sequences and stage_data_key(cfg, s) not in items:
                items[stage_data_key(cfg, s)] = load_stage_items(cfg, s)
        self.model = model = self._build([it for part in items.values() for it in part])
        engines.configure(self.accelerator, cfg, model)
        self.workers = resolve_workers(cfg.data.workers)
        self.datasets = {key: self._dataset(part, model) for key, part in items.items()}
        self.data = self.datasets["data.train"]
        self.bad = BadImages(cfg.data, sum(len(d) for d in self.datasets.values()))
        self._preflight(model)
        self._write_run_files(model)
        if cfg.train.trackers:
            trackers.start(acc, cfg, self.run.path)
        start_stage, start_step, resume_from = self._resume_point()
        if self.recipe_changes:
            self._record_recipe_changes(resume_from)
        model.to(acc.device)

        self.result = result = TrainResult(model=model)
        t0 = time.perf_counter()
        with progress(disable=not acc.is_main_process) as self.bar:
            for s in range(start_stage, len(cfg.train.stages)):
                first = s == start_stage
                if not first or resume_from is None or start_step == 0:  # a stage's randomness depends only on
                    torch.manual_seed(stage_seed(own_seed(cfg, s), s))  # (seed, stage), not on earlier stages or parts
                started = time.perf_counter()
                try:
                    stage_runner(cfg.train.stages[s]).run(
                        self, s, start_step if first else 0, resume_from if first else None
                    )
                except UserError as exc:  # a cause the user can fix: say how the run continues afterwards
                    if type(exc) is ConfigError:
                        raise
                    raise type(exc)(f"{exc} {self._how_to_continue()}", exc.exit_code) from None
                result.stage_seconds[f"{s}:{cfg.train.stages[s].name}"] = time.perf_counter() - started
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
                FINGERPRINT: training_fingerprint(cfg.resolved()),
            },
        )
        acc.wait_for_everyone()  # no process moves on (e.g. to evaluate) before the final weights exist
        if cfg.train.trackers:
            acc.end_training()
        if engines.sharded(acc):  # the trained model is in shards: evaluate a whole copy read back from `final`
            self.wrapped = self.model = result.model = None
            acc.free_memory(model)
            del model
            result.model = load_run_model(self.run.path, device=acc.device)[0]
        if acc.is_main_process:
            self._write_train_info(result)
            if self.dropped:
                console.print(
                    f"{len(self.dropped)} training rows did not fit train.max_length="
                    f"{cfg.train.max_length} and taught nothing (listed in train_log.jsonl as `dropped`)",
                    highlight=False,
                )
        return result

    def _resume_point(self) -> tuple[int, int, Path | None]:
        """(stage, step, checkpoint) to continue from: (0, 0, None) for a new run. On resume, half-written temp files
        are tidied, the log is cut back to the checkpoint, and the checkpoint's weights and counters are loaded."""
        if not self.resume:
            return 0, 0, None
        ckpt.remove_partial(self.run.path)  # what a killed process left half-written
        latest = ckpt.latest_checkpoint(self.run.path, verified=True, report=console.print)
        stage, step = 0, 0
        if latest is not None:
            state = ckpt.load_trainer_state(latest)
            stage, step = state["stage"], state["step"]
            self.guard.skipped = state.get("nonfinite_skipped", 0)
            self.bad.skipped = dict(state.get("bad_images", {}))
            self.dropped = dict(state.get("dropped", {}))
            self.log_lines = state.get("log_lines", 0)
        if self.accelerator.is_main_process:  # the log is cut back to the checkpoint it continues from
            io.truncate_lines(self.run.train_log, self.log_lines)
            apply_lora(self.model, self.cfg, up_to_stage=stage)
            if latest is not None:
                ckpt.load_weights(self.model, latest / ckpt.WEIGHTS)
        return stage, step, latest

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
                "stage_seconds": result.stage_seconds,
                "samples_per_s": result.samples_per_s,
                "trainable": result.trainable,
                "vision_pretrain": result.vision_pretrain,
                "parameters": {g: sum(p.numel() for p in getattr(model, g).parameters()) for g in parts},
                "llm_pretraining": model.llm.pretraining,
                "bad_images": self.bad.record(),
                "dropped": {"items": len(self.dropped), "max_length": self.cfg.train.max_length},
            },
        )

    def _record_environment(self) -> None:
        """`environment.json`: the seed and where the run was trained; a resume elsewhere is added, not hidden."""
        env, path = environment(), self.run.environment
        record = (
            io.read_record(path)
            if self.resume and path.is_file()
            else {"seed": self.cfg.seed, "trained_on": env, "resumed_on": []}
        )
        if env != record["trained_on"] and env not in record["resumed_on"]:
            record["resumed_on"].append(env)
        io.write_json(path, record)

    def _record_recipe_changes(self, resumed_from: Path | None) -> None:
        """A resume with changed learning rates / warmup / on_nonfinite: in the log and in environment.json."""
        at = str(resumed_from.relative_to(self.run.path)) if resumed_from else None
        console.print(
            f"{self.run.path}: resuming from {at} with a changed recipe: "
            + ", ".join(f"{k} {old} -> {new}" for k, (old, new) in self.recipe_changes.items()),
            soft_wrap=True,
            highlight=False,
        )
        self.log({"event": "recipe-changed", "resumed_from": at, "changes": self.recipe_changes})
        if self.accelerator.is_main_process:
            record = io.read_record(self.run.environment)
            record.setdefault("recipe_changes", []).append({"resumed_from": at, "changes": self.recipe_changes})
            io.write_json(self.run.environment, record)

    def _from_every_process(self, items: list) -> list:
        """`items` of every process (a collective only when some process has any)."""
        if self.accelerator.num_processes > 1 and all_sum(self.accelerator, len(items)) > 0:
            gathered: list = [None] * self.accelerator.num_processes
            torch.distributed.all_gather_object(gathered, items)
            items = [x for part in gathered for x in part]
        return items

    def note_dropped(self, items: list[tuple[str, str]]) -> None:
        """Record the rows that taught nothing because they did not fit `train.max_length`; each is logged once."""
        for key, why in self._from_every_process(items):
            if key not in self.dropped:
                self.dropped[key] = why
                self.log({"event": "dropped", "item": key, "why": why})

    def note_bad_items(self, items: list[tuple[str, str]]) -> None:
        """Record the items a step skipped for their images (`on_bad_image: skip`), from every process; each is
        logged once, and more than `data.max_bad_fraction` of them stops the run (a DataError)."""
        for key, path in self._from_every_process(items):
            if self.bad.add(key, path):
                console.print(
                    f"{path}: unreadable image, item {key} skipped (data.on_bad_image: skip)", highlight=False
                )
                self.log({"event": "bad-image", "item": key, "image": path})

    def log(self, record: dict) -> None:
        """One line of train_log.jsonl (main process) and the trackers, at the current global step."""
        if self.accelerator.is_main_process:
            io.append_jsonl(self.run.train_log, record)
            self.log_lines += 1
        if self.cfg.train.trackers:
            trackers.log(self.accelerator, record, self.global_step)

    def checkpoint(self, optimizer, stage: int, step: int) -> None:
        """`checkpoints/step-<stage><step>` (the model, the optimizer if mid-stage, RNG, counters); two are kept."""
        self._save(
            self.run.step_checkpoint(stage, step),
            self.model,
            optimizer,
            {
                "stage": stage,
                "step": step,
                "nonfinite_skipped": self.guard.skipped,
                "bad_images": self.bad.skipped,
                "dropped": self.dropped,
                "log_lines": self.log_lines,
            },
        )
        if self.accelerator.is_main_process:
            ckpt.prune_checkpoints(self.run.path, keep=2)

    def _how_to_continue(self) -> str:
        last = self.last_good_checkpoint()
        if last is None:
            return "(Nothing was checkpointed yet: fix it and run the same command again.)"
        return (
            f"(The run keeps {last}: fix it and continue with --resume and the same --out; a resume may "
            "change the learning rates, train.warmup_ratio, train.on_nonfinite and data.on_bad_image.)"
        )

    def last_good_checkpoint(self) -> str | None:
        """The newest complete checkpoint, relative to the run (for a fault's message), or None."""
        latest = ckpt.latest_checkpoint(self.run.path)
        return str(latest.relative_to(self.run.path)) if latest else None

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
    project = ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(RunDir(run_dir).tensorboard))
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=mixed_precision,
        log_with=list(log_with) or None,
        project_config=project,
    )
