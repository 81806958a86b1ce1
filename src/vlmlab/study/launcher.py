"""A study spec's `launcher:` block: where and with what resources its jobs run (`vlmlab study --launcher`),
and what the plan (`vlmlab study --plan`) prices them on. Every field is optional; the CLI overrides any."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from vlmlab.config import Strict
from vlmlab.errors import ConfigError, validation_error

_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_UNIT = re.compile(r"^(\d+(?:\.\d+)?)\s*(m|min|h|d)$")
_UNIT_MIN = {"m": 1, "min": 1, "h": 60, "d": 1440}


def minutes(value: str | int, key: str) -> int:
    """A time as whole minutes (rounded up): SLURM's formats (`"90"` minutes, `MM:SS`, `HH:MM:SS`, `D-HH`,
    `D-HH:MM`, `D-HH:MM:SS`) or a number with a unit (`90m`, `12h`, `2d`). In YAML write it quoted: unquoted,
    `12:00:00` is read as the number 43200 (base 60), which is refused rather than misread."""
    if not isinstance(value, str):
        raise ConfigError(key, f"{value!r}: write a time as a quoted string ('12:00:00') or with a unit (12h)")
    text = value.strip()
    if m := _UNIT.match(text):
        seconds = float(m.group(1)) * _UNIT_MIN[m.group(2)] * 60
    elif m := _TIME.match(text):
        days, first, second, third = m.groups()
        a, b, c = int(first), int(second or 0), int(third or 0)
        if days is not None:  # D-H, D-H:M, D-H:M:S
            seconds = int(days) * 86400 + a * 3600 + b * 60 + c
        elif third is not None:  # H:M:S
            seconds = a * 3600 + b * 60 + c
        else:  # M or M:S
            seconds = a * 60 + b
    else:
        raise ConfigError(key, f"{value!r} is not a time (90m, 12h, 2d, MM:SS, HH:MM:SS or D-HH:MM:SS)")
    if seconds < 60:
        raise ConfigError(key, f"{value!r}: a job needs at least one minute")
    return int(-(-seconds // 60))


def _check_time(value) -> None:
    try:
        minutes(value, "")
    except ConfigError as exc:
        raise ValueError(exc.detail) from None


class Resources(Strict):
    """What one job asks the scheduler for; unset fields fall back to the launcher block's."""

    partition: str | None = None
    gpus_per_node: int | None = Field(None, ge=0, le=64)
    nodes: int | None = Field(None, ge=1, le=1024)
    cpus_per_gpu: int | None = Field(None, ge=1, le=256)
    mem_gb: float | None = Field(None, gt=0)
    time: str | None = None  # '12:00:00', '90m', '12h', '2d' (quoted in YAML); `auto` = from the plan
    strategy: Literal["ddp", "fsdp", "zero2", "zero3"] | None = None

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, value):
        if value is not None and value != "auto":
            _check_time(value)
        return value


class LauncherSpec(Resources):
    """Defaults for every job of the study, then per-variant (`variants: {NAME: {...}}`) and combine overrides."""

    partition: str | None = None  # SLURM partition (--partition)
    account: str | None = None  # SLURM account charged (--account)
    qos: str | None = None  # SLURM quality of service (--qos)
    constraint: str | None = None  # SLURM node features (--constraint, e.g. a100)
    gpu: str = "a100-80gb"  # what the plan prices FLOPs and checks memory on (vlmlab.plan.hardware)
    gpus_per_node: int | None = Field(1, ge=0, le=64)  # 0: a CPU-only job
    nodes: int | None = Field(1, ge=1, le=1024)
    cpus_per_gpu: int | None = Field(8, ge=1, le=256)  # data workers + the training process
    time: str | None = "auto"  # `auto`: the plan's projection x time_margin, at most max_time
    max_time: str = "48:00:00"  # the partition's limit: longer work is continued by requeued jobs
    time_margin: float = Field(1.5, ge=1.0, le=10.0)
    strategy: Literal["ddp", "fsdp", "zero2", "zero3"] | None = "ddp"  # several GPUs: how the model is held
    accelerate_config: str | None = None  # an accelerate config file instead of the strategy's shipped one
    mfu: float | None = Field(None, gt=0, le=1)  # the plan's model FLOP utilization (default: vlmlab.plan.hardware)
    array_parallelism: int | None = Field(None, ge=1)  # jobs at once (default: 64 on SLURM, 1 locally)
    max_requeue: int = Field(3, ge=0, le=100)  # a job cut by its time limit is requeued this often (+ what auto adds)
    setup: list[str] = Field(default_factory=list)  # shell lines run before each job (module load, activate)
    sbatch: dict[str, str | int | bool] = Field(default_factory=dict)  # other #SBATCH flags, e.g. {mail-type: END}
    folder: str | None = None  # submitit's job files and logs (default: <study dir>/launcher)
    combine: Resources = Resources(gpus_per_node=1, nodes=1, time="04:00:00")  # the combine + analyses job
    variants: dict[str, Resources] = Field(default_factory=dict)  # per variant name

    @field_validator("max_time", mode="before")
    @classmethod
    def _max_time(cls, value):
        _check_time(value)
        return value

    def for_variant(self, name: str | None) -> Resources:
        """The resources of one variant's jobs (`None`: the combine job): its overrides over the defaults."""
        extra = self.combine if name is None else self.variants.get(name, Resources())
        fields = {k: getattr(self, k) for k in Resources.model_fields}
        fields.update(extra.model_dump(exclude_none=True))
        return Resources(**fields)


def with_overrides(spec: LauncherSpec, overrides: dict[str, Any]) -> LauncherSpec:
    """The launcher block with dotted `KEY=VALUE` overrides from the command line (`variants.gen3.time`)."""
    data = spec.model_dump()
    for key, value in overrides.items():
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"launcher.{key}", "is not a mapping")
        node[parts[-1]] = value
    try:
        return LauncherSpec(**data)
    except ValidationError as exc:
        raise validation_error(exc, prefix="launcher") from None
