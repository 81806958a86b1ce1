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
from vlmlab.config import (
    MAX_SEED,
    DataSource,
    ImageConfig,
    RunConfig,
    Strict,
    builtin_config,
    config_from_dict,
    read_yaml,
)
from vlmlab.data.perturb import parse_perturbation
from vlmlab.errors import ConfigError, UserError, validation_error
from vlmlab.registry import ANALYSES
from vlmlab.study.launcher import LauncherSpec

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


ANSWER_FORMATS = Literal["vlmlab", "lmms-eval", "vlmevalkit", "auto"]


class ExternalAnswers(Strict):
    """One answers file of an external variant, and how to read it (as `vlmlab score` does)."""

    file: str  # relative to the spec file
    format: ANSWER_FORMATS | None = None  # default: the variant's `format`
    harness_task: str | None = None  # lmms-eval's task name (default: from the file name)
    index_map: str | None = None  # CSV/TSV: the harness's doc_id / index -> vlmlab item_id
    docs: str | None = None  # lmms-eval: the task's dataset rows (doc_id = position)


class ExternalVariant(Strict):
    """A variant whose answers come from files (a released model evaluated elsewhere, an older run): scored with
    the study's tasks and vlmlab's rules, analysed beside the trained variants. Nothing about how it was made is
    known, so the control check cannot vouch for it."""

    about: str = ""  # what it is, shown in the report (e.g. "llava-v1.5-7b-hf, lmms-eval 0.6")
    answers: dict[str, str | ExternalAnswers] = Field(default_factory=dict)  # task (or task:split) -> answers
    predictions: str | None = None  # or: a run directory / `vlmlab score` output, its predictions.parquet as is
    format: ANSWER_FORMATS = "vlmlab"  # of the answers files: vlmlab JSON lines, lmms-eval, vlmevalkit, auto
    levels: dict[str, str] = Field(default_factory=dict)  # factor -> the level it stands at (default: its name)
    image: ImageConfig | None = None  # the frame its box answers are in (default: the base config's data.image)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """`name: {task: FILE, ...}` is short for `name: {answers: {task: FILE, ...}}`."""
        if isinstance(value, dict) and value and not set(value) & set(cls.model_fields):
            return {"answers": value}
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ExternalVariant:
        if bool(self.answers) == bool(self.predictions):
            raise ValueError("give `answers` (task: file) or `predictions` (a run or `vlmlab score` directory)")
        return self


class AnalysisSpec(BaseModel):
    """`{id: <registered analysis>, ...its own fields}`; a bare string means the analysis with its defaults."""

    model_config = ConfigDict(extra="allow")
    id: str


class StudySpec(Strict):
    name: str
    question: str = ""  # what the study asks, shown atop the report
    base: str | dict[str, Any] | None = None  # a built-in config name, a path relative to the spec, or a mapping
    set: dict[str, Any] = Field(default_factory=dict)  # dotted overrides applied to every variant
    factors: dict[str, Factor] = Field(default_factory=dict)
    external: dict[str, ExternalVariant] = Field(default_factory=dict)  # variants whose answers come from files
    variants: Literal["cross"] | list[dict[str, str]] = "cross"
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(default_factory=lambda: [0], min_length=1)
    datasets: dict[str, DatasetSpec] = Field(default_factory=dict)
    eval: EvalSpec = EvalSpec()
    analyses: list[AnalysisSpec] = Field(default_factory=list)
    launcher: LauncherSpec = LauncherSpec()  # cluster jobs and the plan's machine (`vlmlab study --launcher/--plan`)

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
        if not self.factors and not self.external:
            raise ConfigError("factors", "a study varies at least one factor (or compares `external` answers)")
        if self.factors and self.base is None:
            raise ConfigError("base", "a study that trains variants needs a base config")
        if self.base is None and self.eval.tasks is None and any(e.answers for e in self.external.values()):
            raise ConfigError("eval.tasks", "name the tasks the external answers are scored on (there is no base)")
        for name, ext in self.external.items():
            where = f"external.{name}"
            if not _NAME.match(name) or name in RESERVED_NAMES:
                raise ConfigError(where, "name it with letters, digits and . _ + - (not a results column)")
            for fname, level in ext.levels.items():
                if fname not in self.factors:
                    raise ConfigError(
                        f"{where}.levels.{fname}", f"no factor {fname!r} (factors: {', '.join(self.factors) or 'none'})"
                    )
                if not _NAME.match(level):
                    raise ConfigError(f"{where}.levels.{fname}", "level names use letters, digits and . _ + -")
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


COMPARE_FACTOR = "model"  # the one factor of a study without factors: its levels are the external variants


def external_levels(spec: StudySpec, name: str) -> dict[str, str]:
    """The level of every factor an external variant stands at: what it says, else its own name."""
    if not spec.factors:
        return {COMPARE_FACTOR: name}
    return {f: spec.external[name].levels.get(f, name) for f in spec.factors}


def analysis_factors(spec: StudySpec) -> dict[str, Factor]:
    """The factors as the analyses see them: each factor's levels, then the levels only external variants stand
    at (they set no config key: their answers come from files); a study without factors has one, `model`."""
    if not spec.factors:
        levels = {name: {} for name in spec.external}
        return {COMPARE_FACTOR: Factor.model_construct(keys=[COMPARE_FACTOR], levels=levels)}
    out = {}
    for fname, factor in spec.factors.items():
        levels = dict(factor.levels)
        for name in spec.external:
            levels.setdefault(external_levels(spec, name)[fname], {})
        out[fname] = Factor.model_construct(keys=list(factor.keys), levels=levels)
    return out


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
    if spec.base is None:
        raise ConfigError("base", "this study has no base config (it trains nothing)")
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
    once per resolved variant (progress). A study of external variants only trains none."""
    if not spec.factors:
        return []
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
