"""The cost plan of one variant and of a whole study: parameters, memory per GPU, FLOPs, steps, GPU-hours.

GPU-hours = FLOPs / (peak FLOP/s x MFU) for training and evaluation prefill, plus evaluation's decoding steps
priced by memory bandwidth (each step reads the weights once per batch). A variant's runs (one per seed)
cost the same; the study's total multiplies by the seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlmlab.config import RunConfig
from vlmlab.data.order import stage_steps
from vlmlab.data.sources import load_training_items, stage_data_key
from vlmlab.models.footprint import Footprint, eval_footprint, stage_footprint
from vlmlab.models.sharding import largest_unit_bytes, per_process
from vlmlab.plan.data import StageData, eval_items, stage_data
from vlmlab.plan.flops import (
    SampleFlops,
    eval_item_flops,
    llm_forward_flops,
    tower_forward_flops,
    training_sample_flops,
)
from vlmlab.plan.hardware import Hardware
from vlmlab.plan.shapes import shape_model

PROMPT_TEXT_TOKENS = 60  # an evaluation prompt's text (template + question), the routing papers' figure


@dataclass(frozen=True)
class Setting:
    """What the plan prices a run on: the machine, the engine, and the processes one run trains with."""

    hardware: Hardware
    strategy: str  # ddp | fsdp | zero2 | zero3
    processes: int  # GPUs per run (gpus per node x nodes), at least 1


@dataclass
class StagePlan:
    name: str
    trained: int  # parameters this stage trains
    items: int
    steps: int
    global_batch: int
    flops: SampleFlops  # per training sample
    unsharded: Footprint  # the memory pre-flight's estimate for one process holding everything
    unit: int  # bytes of the largest block a sharding engine gathers
    data: StageData
    setting: Setting
    reused: str | None = None  # a vision-pretrain stage another variant (or the cache) already computed

    def memory_under(self, strategy: str, processes: int) -> Footprint:
        return per_process(self.unsharded, strategy, processes, self.unit, self.trained)

    @property
    def memory(self) -> Footprint:
        """Per process, under the plan's strategy and process count."""
        return self.memory_under(self.setting.strategy, self.setting.processes)

    @property
    def samples(self) -> int:
        return self.steps * self.global_batch

    @property
    def total_flops(self) -> float:
        return 0.0 if self.reused else self.samples * self.flops.total


@dataclass
class VariantPlan:
    name: str
    seeds: int
    parameters: dict[str, int]  # per part, on the built model
    stages: list[StagePlan]
    eval_questions: dict[str, int]  # per task, per evaluation mode
    eval_modes: int
    eval_flops: SampleFlops  # per question
    eval_memory: Footprint
    prefill_flops: float  # the LLM decoder over one evaluation prompt (vision + PROMPT_TEXT_TOKENS)
    setting: Setting
    eval_batch: int = 1
    new_tokens: int = 0
    notes: list[str] = field(default_factory=list)  # what was assumed
    warnings: list[str] = field(default_factory=list)  # what will go wrong as configured

    @property
    def train_flops(self) -> float:
        return sum(s.total_flops for s in self.stages)

    @property
    def eval_seconds(self) -> float:
        """One run's evaluation: prefill at the MFU, each decode step bound by reading the weights."""
        h, n = self.setting.hardware, sum(self.eval_questions.values()) * self.eval_modes
        compute = n * (self.eval_flops.total - self.eval_flops.parts.get("decode", 0)) / (h.peak_flops * h.mfu)
        weights = self.eval_memory.parts.get("weights", 0)
        decode = n / max(1, self.eval_batch) * self.new_tokens * weights / h.bandwidth
        return compute + decode

    @property
    def gpu_hours(self) -> float:
        """GPU-hours of one run (one seed): training at the MFU, plus evaluation."""
        h = self.setting.hardware
        return self.train_flops / (h.peak_flops * h.mfu) / 3600 + self.eval_seconds / 3600

    @property
    def wall_hours(self) -> float:
        return self.gpu_hours / self.setting.processes

    @property
    def peak(self) -> Footprint:
        return max([s.memory for s in self.stages] + [self.eval_memory], key=lambda f: f.total)

    @property
    def fits(self) -> bool:
        return self.peak.total <= self.setting.hardware.usable_bytes


def plan_variant(
    name: str, cfg: RunConfig, seeds: int, setting: Setting, towers: set[str] | None = None
) -> VariantPlan:
    """The plan of one variant (`cfg`: its first seed's resolved config). `towers` holds the vision-pretrain
    stages planned so far (their cache keys): a variant whose tower another already trains reuses it."""
    texts = _lazy_texts(cfg)
    sm = shape_model(cfg, texts)
    model = sm.model
    tower = tower_forward_flops(sm)
    unit = largest_unit_bytes(model)
    stages, notes = [], list(sm.notes)
    cache: dict[str, StageData] = {}
    for s, stage in enumerate(cfg.train.stages):
        key = stage_data_key(cfg, s)
        if key not in cache:
            sources = cfg.data.train if stage.data is None else stage.sources
            cache[key] = stage_data(cfg, sources, key, model.llm, model.num_image_tokens, sm.real_tokenizer)
        data = cache[key]
        items, reused = data.items, None
        if not stage.kind.on_sequences:
            items = _pretrain_images(cfg, s) or max(1, data.extent.images)
            reused = _reused_tower(cfg, s, towers if towers is not None else set())
        micro = (stage.batch_size or cfg.train.batch_size) * setting.processes
        steps = stage_steps(stage, items, micro, cfg.train.grad_accum)
        unsharded = stage_footprint(model, cfg, s, data.extent)
        trained = unsharded.parts.get("gradients + AdamW state", 0) // 12  # 12 bytes per trained parameter
        flops = training_sample_flops(sm, cfg, s, data, tower)
        global_batch = micro * cfg.train.grad_accum
        stages.append(
            StagePlan(stage.name, trained, items, steps, global_batch, flops, unsharded, unit, data, setting, reused)
        )
    for data in cache.values():
        notes += data.notes
    questions, eval_notes = eval_items(cfg)
    notes += eval_notes
    first = next(iter(cache.values()))
    plan = VariantPlan(
        name=name,
        seeds=seeds,
        parameters={part: sum(p.numel() for p in getattr(model, part).parameters()) for part in _PARTS},
        stages=stages,
        eval_questions=questions,
        eval_modes=1,
        eval_flops=eval_item_flops(sm, cfg, tower, PROMPT_TEXT_TOKENS),
        eval_memory=eval_footprint(model, cfg, first.extent.prompt_tokens, first.extent.image_bytes),
        prefill_flops=llm_forward_flops(sm, model.num_image_tokens, PROMPT_TEXT_TOKENS),
        setting=setting,
        eval_batch=cfg.eval.batch_size,
        new_tokens=cfg.eval.max_new_tokens,
        notes=notes,
    )
    if setting.strategy in ("fsdp", "zero2", "zero3") and setting.processes > 1 and cfg.train.checkpoint_every:
        plan.warnings.append(
            f"train.checkpoint_every: refused under {setting.strategy} (mid-stage checkpoints need the whole "
            "optimizer state): set it to null; a preempted job then restarts its stage"
        )
    return plan


_PARTS = ("vision", "projector", "llm", "routing")


def _pretrain_images(cfg: RunConfig, s: int) -> int | None:
    """The images a vision-pretrain stage learns from, counted as the stage counts them (None: data not here)."""
    from vlmlab.data.sources import load_training_sources
    from vlmlab.plan.data import source_present
    from vlmlab.train.vision_pretrain import ordered_image_labels, stage_data_labels

    stage = cfg.train.stages[s]
    sources = [stage.data] if stage.data is not None else cfg.data.train
    if not all(source_present(src) for src in sources):
        return None
    if stage.data is not None:
        return len(stage_data_labels(cfg, s)[0])
    return len(ordered_image_labels(load_training_sources(cfg), stage.objective))


def _reused_tower(cfg: RunConfig, s: int, towers: set[str]) -> str | None:
    """Whether vision-pretrain stage `s` is computed elsewhere: by an earlier variant of the study (the study's
    tower cache) or already in the user cache (a stage with its own data)."""
    from vlmlab.cache import cache_root
    from vlmlab.train import vision_cache

    key = vision_cache.stage_key(cfg, s)
    if key is None:
        return None
    if key in towers:
        return "shared"
    towers.add(key)
    stored = cache_root() / "vision-pretrain" / key / vision_cache.METRICS
    return "cached" if cfg.train.stages[s].data is not None and stored.is_file() else None


def _lazy_texts(cfg: RunConfig):
    """The training texts, loaded only if a tiny rung's tokenizer has to be fit to them."""

    def texts() -> list[str]:
        from vlmlab.train.trainer import tokenizer_texts

        return tokenizer_texts(load_training_items(cfg))

    return texts


def fewest_gpus(plan: VariantPlan, limit: int = 256) -> tuple[str, int] | None:
    """The smallest power-of-two GPU count (under the plan's strategy, else FSDP) at which every phase fits the
    card, for a variant that does not fit as planned; None when none up to `limit` does."""
    usable = plan.setting.hardware.usable_bytes
    if plan.eval_memory.total > usable:  # evaluation holds the whole model on one process
        return None
    for strategy in dict.fromkeys((plan.setting.strategy, "fsdp")):
        n = 1
        while n <= limit:
            if all(stage.memory_under(strategy, n).total <= usable for stage in plan.stages):
                return strategy, n
            n *= 2
    return None
