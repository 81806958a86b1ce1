"""Study specs (YAML): a base config, factors whose levels override declared keys, seeds, tasks, analyses."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vlmlab import io
from vlmlab.config import MAX_SEED, DataSource, RunConfig, builtin_config, config_from_dict, read_yaml
from vlmlab.data.perturb import parse_perturbation
from vlmlab.errors import ConfigError, UserError, validation_error
from vlmlab.registry import ANALYSES

RESERVED_NAMES = {
    "item_id",
    "task",
    "category",
    "question",
    "answer",
    "prediction",
    "score",
    "correct",
    "confidence",
    "stopped",
    "blind",
    "perturb",
    "image",
    "variant",
    "seed",
    "mode",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Factor(Strict):
    """One thing the study varies: the config keys it declares and, per level, the values of exactly those keys."""

    keys: list[str] = Field(min_length=1)
    levels: dict[str, dict[str, Any]] = Field(min_length=1)


class DatasetSpec(Strict):
    """A generated dataset the study needs, built once into the cache; configs name it `${datasets.NAME}`."""

    generator: Literal["shapes-world"] = "shapes-world"
    seed: int = 0
    n: int = Field(ge=10)
    size: int = Field(64, ge=16, le=1024)


class EvalSpec(Strict):
    tasks: list[DataSource] | None = None  # None = the base config's data.eval
    blind: bool = True  # also evaluate with a constant image (visual reliance)
    perturb: list[str] = Field(default_factory=list)  # e.g. ["noise:0.1", "shift:4"]

    @field_validator("perturb")
    @classmethod
    def _known_perturbations(cls, value: list[str]) -> list[str]:
        for spec in value:  # checked with the spec (and so by --check), not after the first variant trained
            try:
                parse_perturbation(spec)
            except UserError as exc:
                raise ValueError(str(exc).removeprefix("--perturb ")) from None
        return value


class AnalysisSpec(BaseModel):
    """`{id: <registered analysis>, ...its own fields}`; a bare string means the analysis with its defaults."""

    model_config = ConfigDict(extra="allow")
    id: str


class StudySpec(Strict):
    name: str
    question: str = ""  # what the study asks, shown atop the report
    base: str | dict[str, Any]  # a built-in config name, a path relative to the spec file, or a config mapping
    set: dict[str, Any] = Field(default_factory=dict)  # dotted overrides applied to every variant
    factors: dict[str, Factor] = Field(min_length=1)
    variants: Literal["cross"] | list[dict[str, str]] = "cross"
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(default_factory=lambda: [0], min_length=1)
    datasets: dict[str, DatasetSpec] = Field(default_factory=dict)
    eval: EvalSpec = EvalSpec()
    analyses: list[AnalysisSpec] = Field(default_factory=list)

    @field_validator("analyses", mode="before")
    @classmethod
    def _bare_ids(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"id": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use letters, digits and . _ + - (it names directories)")
        return value

    @model_validator(mode="after")
    def _levels_set_declared_keys(self) -> StudySpec:
        for fname, factor in self.factors.items():
            if fname in RESERVED_NAMES:
                raise ConfigError(f"factors.{fname}", f"{fname!r} is a results column; name the factor otherwise")
            declared = set(factor.keys)
            for level, overrides in factor.levels.items():
                where = f"factors.{fname}.levels.{level}"
                if not _NAME.match(level):
                    raise ConfigError(where, "level names use letters, digits and . _ + -")
                extra, missing = set(overrides) - declared, declared - set(overrides)
                if extra:
                    raise ConfigError(
                        where,
                        f"sets {', '.join(sorted(extra))}, which factor {fname!r} does not declare "
                        f"(keys: {', '.join(factor.keys)})",
                    )
                if missing:
                    raise ConfigError(where, f"does not set {', '.join(sorted(missing))}, declared by factor {fname!r}")
        if self.variants != "cross":
            for i, combo in enumerate(self.variants):
                if set(combo) != set(self.factors):
                    raise ConfigError(f"variants.{i}", f"name one level of every factor ({', '.join(self.factors)})")
                for fname, level in combo.items():
                    if level not in self.factors[fname].levels:
                        raise ConfigError(
                            f"variants.{i}.{fname}",
                            f"unknown level {level!r} (known: {', '.join(self.factors[fname].levels)})",
                        )
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("seeds", "seeds repeat")
        return self


@dataclass
class Variant:
    """One trained model of the study: a level per factor, under one seed."""

    name: str  # the levels joined by '-', e.g. `gen3` or `gen3-vmamba`
    levels: dict[str, str]  # factor -> level
    seed: int
    overrides: dict[str, Any]  # the factor levels' dotted overrides (what this variant is allowed to change)
    cfg: RunConfig = field(repr=False)
    resolved: dict[str, Any] = field(init=False, repr=False)  # cfg.resolved(), computed once

    def __post_init__(self) -> None:
        self.resolved = self.cfg.resolved()

    @property
    def run_name(self) -> str:
        return f"{self.name}/seed-{self.seed}"


def variant_inputs(v: Variant, spec: StudySpec) -> str:
    """Hash of everything a variant's outputs depend on: its resolved config and the evaluation spec."""
    return io.content_hash({"config": v.resolved, "eval": spec.eval.model_dump(mode="json")})


def build_analysis(spec: AnalysisSpec, key: str):
    """The registered analysis named by `spec`, its fields checked by its Params (errors name the key)."""
    cls = ANALYSES.get(spec.id, key=f"{key}.id")
    try:
        return cls(cls.Params(**(spec.model_extra or {})))
    except ValidationError as exc:
        raise validation_error(exc, prefix=key) from None


def load_study_spec(path: str | Path) -> tuple[StudySpec, Path]:
    """The validated spec and the directory relative paths in it resolve against."""
    path = Path(path)
    return study_spec_from_dict(read_yaml(path, "study spec"), str(path)), path.parent


def study_spec_from_dict(raw: Any, source: str = "study") -> StudySpec:
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a study spec must be a YAML mapping", exit_code=2)
    try:
        return StudySpec(**raw)
    except ValidationError as exc:
        raise validation_error(exc, context=(source,)) from None
    except ConfigError as exc:
        raise exc.within(source) from None


def base_config(spec: StudySpec, spec_dir: Path) -> dict[str, Any]:
    """The base config as plain data."""
    if isinstance(spec.base, dict):
        return spec.base
    path = spec_dir / spec.base
    if not path.is_file():
        path = builtin_config(spec.base) or path
    if not path.is_file():
        raise ConfigError("base", f"{spec.base}: config file not found (and no built-in config of that name)")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError("base", f"{path}: a config must be a YAML mapping")
    return raw


def level_combinations(spec: StudySpec) -> list[dict[str, str]]:
    """Every variant's {factor: level} (the cross product, or the listed combinations), in the spec's order."""
    names = list(spec.factors)
    if spec.variants == "cross":
        return [dict(zip(names, levels)) for levels in itertools.product(*(spec.factors[n].levels for n in names))]
    return [{n: combo[n] for n in names} for combo in spec.variants]


def expand_variants(
    spec: StudySpec, spec_dir: Path, dataset_paths: dict[str, str] | None = None, tick: Callable[[], None] | None = None
) -> list[Variant]:
    """Every (level combination, seed) as a resolved config; a config error names the variant. `tick` is called
    once per resolved variant (progress)."""
    base = _substitute(base_config(spec, spec_dir), dataset_paths or {}, "base")
    names = list(spec.factors)
    combos = level_combinations(spec)
    variants = []
    for combo in combos:
        overrides: dict[str, Any] = {}
        for fname, level in combo.items():
            overrides.update(spec.factors[fname].levels[level])
        vname = "-".join(combo[n] for n in names)
        for seed in spec.seeds:
            every = {**spec.set, **overrides, "seed": seed, "name": f"{spec.name}-{vname}-s{seed}"}
            if spec.eval.tasks is not None:
                every["data.eval"] = [t.model_dump() for t in spec.eval.tasks]
            every = {k: _substitute(v, dataset_paths or {}, f"variant {vname}: {k}") for k, v in every.items()}
            try:
                cfg = config_from_dict(base, every)
            except ConfigError as exc:
                raise exc.within(f"variant {vname} (seed {seed})") from None
            variants.append(Variant(vname, combo, seed, overrides, cfg))
            if tick is not None:
                tick()
    if len({v.name for v in variants}) * len(spec.seeds) != len(variants):
        raise ConfigError("variants", "two variants have the same levels")
    return variants


_DATASET_REF = re.compile(r"^\$\{datasets\.([A-Za-z0-9_.-]+)\}$")


def _substitute(value: Any, paths: dict[str, str], where: str) -> Any:
    """Replace strings `${datasets.NAME}` by that dataset's directory, anywhere in nested data."""
    if isinstance(value, dict):
        return {k: _substitute(v, paths, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, paths, where) for v in value]
    if isinstance(value, str) and (m := _DATASET_REF.match(value)):
        if m.group(1) not in paths:
            raise ConfigError(where, f"{value}: no dataset {m.group(1)!r} in the study's `datasets`")
        return paths[m.group(1)]
    return value


def tower_levels(spec_path: str | Path) -> dict[str, dict[str, Any]]:
    """The `model.vision` config of every level of the study's vision factor (the towers it compares)."""
    spec, spec_dir = load_study_spec(spec_path)
    factor = next((f for f in spec.factors.values() if any(k.startswith("model.vision") for k in f.keys)), None)
    if factor is None:
        raise UserError(f"{spec_path}: no factor varies model.vision (nothing to compare)", exit_code=2)
    base = base_config(spec, spec_dir)["model"]["vision"]
    levels = {}
    for name, overrides in factor.levels.items():
        tower = dict(base)
        for key, value in overrides.items():
            if key == "model.vision":
                tower = dict(value)
            elif key.startswith("model.vision."):
                tower[key.removeprefix("model.vision.")] = value
        levels[name] = tower
    return levels
