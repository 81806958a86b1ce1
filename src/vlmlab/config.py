"""Run configuration: YAML validated by pydantic; every error names its dotted key path."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from vlmlab.errors import ConfigError, UserError, validation_error
from vlmlab.io import parse_yaml, read_yaml_file
from vlmlab.registry import LLM_BACKBONES, PROJECTORS, ROUTING, TASKS, VISION_ENCODERS, PartParams, Registry

MODULE_GROUPS = ("vision", "projector", "llm", "routing")
MAX_SEED = 2**32 - 1  # numpy's range; vlmlab derives per-stage and per-epoch seeds from it within int64
PART_REGISTRIES = dict(zip(MODULE_GROUPS, (VISION_ENCODERS, PROJECTORS, LLM_BACKBONES, ROUTING)))  # group -> registry


class Strict(BaseModel):
    """A schema that refuses unknown keys (every config, spec and launcher block)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class PartSpec(BaseModel):
    """`{id: <registered id>, ...that part's own fields}`; the fields are checked against the part."""

    model_config = ConfigDict(extra="allow")
    id: str
    _params: PartParams | None = PrivateAttr(default=None)

    @property
    def params(self) -> Any:
        if self._params is None:
            raise RuntimeError("part spec used before resolve_parts()")
        return self._params

    def resolve(self, registry: Registry, key: str) -> None:
        cls = registry.get(self.id, key=f"{key}.id")
        try:
            self._params = cls.Params(**(self.model_extra or {}))
        except ValidationError as exc:
            raise validation_error(exc, prefix=key) from None

    def resolved(self) -> dict[str, Any]:
        return {"id": self.id, **self.params.model_dump(mode="json")}


class ModelConfig(Strict):
    vision: PartSpec
    projector: PartSpec = PartSpec(id="gelu-mlp")
    llm: PartSpec
    routing: PartSpec = PartSpec(id="full")
    # boxes as 100 location tokens `<loc_00>`…`<loc_99>`, one per 0-99 coordinate, instead of digits: added to the
    # LLM's tokenizer and embeddings; answers are rewritten to them for training and back to `[x1, y1, x2, y2]`
    # text before scoring (vlmlab.models.llm.box_tokens)
    box_tokens: bool = False
    # a trained run whose final weights (and tokenizer) start this one; routing parameters it lacks
    # (a DPVR branch on top of a model trained with full routing) keep their own initialisation
    init_from: str | None = None


class ImageConfig(Strict):
    size: int = Field(64, ge=8, le=4096)
    geometry: Literal["resize", "letterbox-square"] = "resize"
    # where the image goes in a single-turn prompt: `before` the question (`<image>\n{question}`, LLaVA's layout)
    # or `after` it (`{question}\n<image>`: the vision tokens follow the question, so in a causal decoder they can
    # attend to it). Conversations from LLaVA files keep the placement their records give.
    position: Literal["before", "after"] = "before"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @field_validator("mean")
    @classmethod
    def _finite_mean(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not all(math.isfinite(v) for v in value):
            raise ValueError("must be finite numbers")
        return value

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not all(math.isfinite(v) and v > 0 for v in value):
            raise ValueError("must be finite numbers above 0 (pixels are divided by it)")
        return value


class DataSource(Strict):
    task: str
    split: str = "train"
    limit: int | None = Field(None, ge=1)
    path: str | None = None
    # a LLaVA-1.5 question file (.jsonl of {question_id, image, text, ...}): each item asks its `text`, LLaVA's own
    # prompt, matched by the benchmark's question id (vlmlab.data.llava_prompts)
    prompts: str | None = None
    # a training source's items appear this many times per epoch of its mixture (a mixture weight, as LLaVA-style
    # data recipes up-sample a small source); evaluation sources are read once
    repeat: int = Field(1, ge=1, le=1000)


class DataConfig(Strict):
    train: list[DataSource] = Field(default_factory=list)  # one source, or a mixture trained on together (a run
    # imported with `vlmlab import-llava` has none: it is only evaluated and analysed)
    eval: list[DataSource] = Field(default_factory=list)
    image: ImageConfig = ImageConfig()
    # what an unreadable training image (truncated, corrupt, a decompression bomb) does when training reaches
    # it: `stop` names the file and leaves the run resumable; `skip` trains on without that item (its loss
    # is masked), counts and logs it, and stops once more than `max_bad_fraction` of the items were skipped.
    # `vlmlab data check` reads every image beforehand.
    on_bad_image: Literal["stop", "skip"] = "stop"
    max_bad_fraction: float = Field(0.001, ge=0.0, le=1.0)
    # data loader worker processes that decode, preprocess and tokenize (None: what the machine allows, the cores
    # beyond two shared by the node's processes, at most 4 each; 0: in the training process). Results do not
    # depend on it.
    workers: int | None = Field(None, ge=0, le=64)

    @field_validator("train", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("eval")
    @classmethod
    def _eval_read_once(cls, value: list[DataSource]) -> list[DataSource]:
        for i, src in enumerate(value):
            if src.repeat != 1:
                raise ValueError(f"source {i} has repeat {src.repeat}: `repeat` weights training sources only")
        return value


class LoraConfig(Strict):
    r: int = Field(8, ge=1)
    alpha: float = 16.0
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass(frozen=True)
class StageKind:
    """What kind of training a stage is. The trainer runs each kind with its own object (`vlmlab.train.stages`);
    lower layers read these facts instead of comparing stage names.

    `on_sequences`: trains the VLM on VQA sequences (of `data.train`, or of the stage's own `data`; its
    optimizer steps are counted over them); otherwise it trains the vision tower alone on image labels."""

    name: str
    on_sequences: bool


VISION_PRETRAIN = StageKind("vision-pretrain", on_sequences=False)
STAGE_KINDS = {k.name: k for k in (VISION_PRETRAIN, StageKind("align", True), StageKind("finetune", True))}


def stage_seed(seed: int, stage_index: int) -> int:
    """The seed of stage `stage_index` of a run seeded `seed`: what a stage draws (its batch order, its
    initial randomness) depends only on these two, not on earlier stages or other parts."""
    return seed * 1000 + stage_index


def own_seed(cfg: RunConfig, stage_index: int) -> int:
    """The seed stage `stage_index` of `cfg` follows: its own `seed` if it sets one (a shared tower), else the run's."""
    seed = cfg.train.stages[stage_index].seed
    return cfg.seed if seed is None else seed


class StageConfig(Strict):
    """One training stage. `lr` maps module groups to learning rates; a missing group or 0 = frozen.

    `vision-pretrain` classifies image attributes with the vision tower alone (uses `lr.vision`);
    `align` and `finetune` train on the VQA sequences.
    """

    name: Literal["vision-pretrain", "align", "finetune"]  # the keys of STAGE_KINDS
    epochs: float = Field(1.0, gt=0, allow_inf_nan=False)
    max_steps: int | None = Field(None, ge=1)
    lr: dict[str, float]
    lora: LoraConfig | None = None
    batch_size: int | None = Field(None, ge=1)  # None = train.batch_size
    augment: list[Literal["hflip", "rot90"]] = Field(default_factory=list)  # vision-pretrain only
    # vision-pretrain only: `classify` image attributes from mean-pooled tokens (an ImageNet analogue), or `dense`:
    # each token's occupant (attributes, background) and its object's box (a detection analogue)
    objective: Literal["classify", "dense"] = "classify"
    # The stage's own data; None = the run's `data.train`. `align`/`finetune`: a source or a mixture to train
    # on (LLaVA-1.5 aligns on its 558k captions, then finetunes on mix665k). `vision-pretrain`: one labelled
    # image set (e.g. shapes-world, or an `image-folder` of class dirs), scored on `heldout_split` of it.
    data: DataSource | list[DataSource] | None = None
    heldout_split: str | None = "val"
    # vision-pretrain only, before any sequence stage: the stage's own seed instead of the run's, for its randomness
    # (and, on the first stage, the tower's initialization), so every seed of a study shares one pretrained tower (as
    # every seed of a study with a released tower does); the run's seed still fixes the other parts and the data
    # order. A later vision-pretrain stage may set one only if every stage before it does.
    seed: int | None = Field(None, ge=0, le=MAX_SEED)

    @property
    def kind(self) -> StageKind:
        return STAGE_KINDS[self.name]

    @property
    def sources(self) -> list[DataSource] | None:
        """The stage's own training sources as a list (None: the run's data.train)."""
        return None if self.data is None else self.data if isinstance(self.data, list) else [self.data]

    @model_validator(mode="after")
    def _one_set_for_vision_pretraining(self) -> StageConfig:
        if isinstance(self.data, list) and not self.kind.on_sequences:
            raise ValueError("`data` of a vision-pretrain stage is one labelled image set, not a list")
        if isinstance(self.data, DataSource) and not self.kind.on_sequences and self.data.repeat != 1:
            raise ValueError("`repeat` weights a mixture; a vision-pretrain stage reads each image once per epoch")
        if self.objective != "classify" and self.kind.on_sequences:
            raise ValueError("`objective` is a vision-pretrain setting (align and finetune train on sequences)")
        if isinstance(self.data, list) and not self.data:
            raise ValueError("`data` is an empty list (leave it out to train on data.train)")
        if self.seed is not None and self.kind.on_sequences:
            raise ValueError("`seed` is a vision-pretrain setting (align and finetune follow the run's seed)")
        return self

    @field_validator("lr")
    @classmethod
    def _known_groups(cls, value: dict[str, float]) -> dict[str, float]:
        for group, lr in value.items():
            if group not in MODULE_GROUPS:
                raise ValueError(f"unknown module group {group!r} (known: {', '.join(MODULE_GROUPS)})")
            if not (math.isfinite(lr) and lr >= 0):
                raise ValueError(f"learning rate for {group!r} must be a finite number >= 0")
        if not any(value.values()):
            raise ValueError("every learning rate is 0: the stage would train nothing")
        return {g: value.get(g, 0.0) for g in MODULE_GROUPS}


class NonFiniteConfig(Strict):
    """What a non-finite loss or gradient does: `stop` (keep the last good checkpoint) or `skip` the update."""

    policy: Literal["stop", "skip"] = "stop"
    max_skips: int = Field(10, ge=0)  # with `skip`: updates a run may drop before it stops anyway


class TrainConfig(Strict):
    stages: list[StageConfig] = Field(default_factory=list)  # `vlmlab train` needs at least one
    batch_size: int = Field(32, ge=1)
    grad_accum: int = Field(1, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's, each in [0, 1)
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float | None = Field(1.0, gt=0)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False  # recompute LLM / vision-tower activations in backward (big models)
    memory_check: bool = True  # refuse a run whose estimated peak memory exceeds what is available (models.footprint)
    # training sequences longer than this are cut at the end (never inside the vision tokens); a row left with
    # no supervised token teaches nothing and is counted (LLaVA-1.5: 2048)
    max_length: int | None = Field(None, ge=2)
    # `modality`: batches of one modality (image / text-only) and similar length (LLaVA's group_by_modality_length)
    group_by_length: Literal["none", "modality"] = "none"
    log_every: int = Field(10, ge=1)
    checkpoint_every: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)
    on_nonfinite: NonFiniteConfig = NonFiniteConfig()
    trackers: list[Literal["tensorboard", "mlflow"]] = Field(default_factory=list)  # besides train_log.jsonl

    @field_validator("betas")
    @classmethod
    def _adam_betas(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(math.isfinite(b) and 0 <= b < 1 for b in value):
            raise ValueError("each of AdamW's betas must be in [0, 1)")
        return value

    @field_validator("stages")
    @classmethod
    def _own_seeds_lead(cls, value: list[StageConfig]) -> list[StageConfig]:
        for s, stage in enumerate(value):
            if stage.seed is not None and any(earlier.seed is None for earlier in value[:s]):
                raise ValueError(
                    f"stage {s} sets `seed` but an earlier stage does not: the tower would still depend on the run's "
                    "seed (set it on every vision-pretrain stage from the first)"
                )
        return value


class EvalConfig(Strict):
    batch_size: int = Field(64, ge=1)
    max_new_tokens: int = Field(8, ge=1)


class RunConfig(Strict):
    name: str = "run"
    seed: int = Field(0, ge=0, le=MAX_SEED)
    model: ModelConfig
    data: DataConfig
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    def resolved(self) -> dict[str, Any]:
        """The fully resolved config (part fields with their defaults filled in), as plain data."""
        out = self.model_dump(mode="json")
        out["model"] = {k: getattr(self.model, k).resolved() for k in ("vision", "projector", "llm", "routing")}
        if self.model.box_tokens:  # written only when set, so configs without it keep their saved form and hashes
            out["model"]["box_tokens"] = True
        for stage in out["train"]["stages"]:  # likewise a stage's own seed
            if stage.get("seed") is None:
                stage.pop("seed", None)
        return out


def resolve_parts(cfg: RunConfig) -> RunConfig:
    """Check each part's own fields against its registered class and the task ids against TASKS."""
    for name, registry in PART_REGISTRIES.items():
        getattr(cfg.model, name).resolve(registry, f"model.{name}")
    for i, src in enumerate(cfg.data.train):
        TASKS.get(src.task, key=f"data.train.{i}.task")
    for i, src in enumerate(cfg.data.eval):
        TASKS.get(src.task, key=f"data.eval.{i}.task")
    for s, stage in enumerate(cfg.train.stages):
        for i, src in enumerate(stage.sources or []):
            TASKS.get(
                src.task, key=f"train.stages.{s}.data" + (f".{i}" if isinstance(stage.data, list) else "") + ".task"
            )
    return cfg


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists as {dotted.key: leaf}; lists by index (`train.stages.1.lr.llm`)."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = ((str(i), v) for i, v in enumerate(data))
    else:
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in items:
        child = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (dict, list)) and value:
            out.update(flatten(value, child))
        else:
            out[child] = value
    return out


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c` (or `a.0.c` into a list) in nested data, creating mapping levels as needed."""
    node: Any = raw
    parts = key.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(".".join(parts[: depth + 1]), f"no list entry {part!r} to override")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(".".join(parts[:depth]), "is not a mapping; cannot override a key inside it")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parse `key=value` strings (values are YAML) into a dict of dotted overrides."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE", exit_code=2)
        key, value = item.split("=", 1)
        out[key.strip()] = parse_yaml(value, f"--set {item!r}")
    return out


def config_from_dict(raw: Any, overrides: dict[str, Any] | None = None) -> RunConfig:
    if not isinstance(raw, dict):
        raise ConfigError("", "config must be a YAML mapping")
    raw = copy.deepcopy(raw)
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value)
    try:
        cfg = RunConfig(**raw)
    except ValidationError as exc:
        raise validation_error(exc) from None
    except TypeError as exc:  # non-string keys
        raise ConfigError("", f"bad config structure ({exc})") from None
    return resolve_parts(cfg)


def builtin_config(name: str, kind: str = "configs") -> Path | None:
    """The packaged YAML `vlmlab/<kind>/<name>.yaml` (kind: configs or studies), or None."""
    from importlib import resources

    path = resources.files("vlmlab") / kind / f"{name}.yaml"
    return Path(str(path)) if path.is_file() else None


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """A config or spec file as data (UTF-8 YAML, no key twice); any problem is one line naming the file."""
    return read_yaml_file(path, what)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    return config_from_dict(read_yaml(path), overrides)
