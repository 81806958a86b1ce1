"""`vlmlab study SPEC --plan`: every variant's cost plan on the launcher's machine, the study's total, and (with a
pilot study) the questions and seeds each comparison needs. Nothing is trained, no weights are read."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from vlmlab.config import load_config, read_yaml
from vlmlab.data import shapes_world
from vlmlab.measure.resolve import MeasurementNeeded, resolve_config
from vlmlab.plan.cost import Setting, VariantPlan, plan_variant
from vlmlab.plan.hardware import Hardware, hardware
from vlmlab.plan.pilot import PowerRow, power_table
from vlmlab.progress import progress
from vlmlab.study.launcher import LauncherSpec, Resources, minutes
from vlmlab.study.results import modes
from vlmlab.study.spec import expand_variants, load_study_spec

JOB_OVERHEAD_MIN = 20  # start-up, loading the model and data, the last checkpoint: added to each job's time


@dataclass
class StudyPlan:
    name: str
    seeds: int  # runs per variant
    launcher: LauncherSpec
    hardware: Hardware
    variants: list[VariantPlan]
    power: list[PowerRow] = field(default_factory=list)
    effect: float | None = None

    @property
    def runs(self) -> int:
        return sum(v.seeds for v in self.variants)

    @property
    def gpu_hours(self) -> float:
        return sum(v.gpu_hours * v.seeds for v in self.variants)

    @property
    def flops(self) -> float:
        return sum(v.train_flops * v.seeds for v in self.variants)


def setting_for(launcher: LauncherSpec, resources: Resources, h: Hardware) -> Setting:
    gpus = resources.gpus_per_node if resources.gpus_per_node is not None else 1
    if gpus == 0:  # a CPU job: priced on the measured CPU
        return Setting(hardware("cpu", launcher.mfu), "ddp", 1)
    return Setting(h, resources.strategy or "ddp", gpus * (resources.nodes or 1))


def is_run_config(path: str | Path) -> bool:
    """A run config (a recipe: `model`, no `factors`) rather than a study spec."""
    raw = read_yaml(path, "study spec")
    return isinstance(raw, dict) and "model" in raw and "factors" not in raw


def plan_config(path: str | Path, launcher: LauncherSpec) -> StudyPlan:
    """The plan of one run config (a recipe), as a study of one variant and one seed."""
    cfg = load_config(path)
    h = hardware(launcher.gpu, launcher.mfu)
    plan = plan_variant(cfg.name, cfg, 1, setting_for(launcher, launcher.for_variant(cfg.name), h))
    return StudyPlan(cfg.name, 1, launcher, h, [plan])


def plan_study(spec_path: str | Path, launcher: LauncherSpec | None = None) -> StudyPlan:
    """The plan of every variant of the spec (first seed's config; seeds cost the same), on `launcher`'s machine
    (the spec's `launcher:` block when None)."""
    spec, spec_dir = load_study_spec(spec_path)
    launcher = launcher or spec.launcher
    h = hardware(launcher.gpu, launcher.mfu)
    paths = {name: str(shapes_world.cached_dataset(d.seed, d.n, d.size)) for name, d in spec.datasets.items()}
    first = [v for v in expand_variants(spec, spec_dir, paths) if v.seed == spec.seeds[0]]
    plans, towers = [], set()
    with progress() as bar:
        job = bar.add_task("planning variants", total=len(first), info="")
        for v in first:
            cfg, pending = v.cfg, None
            try:
                cfg = resolve_config(v.cfg)  # DPVR `layer: auto` from a stored profile; never measures
            except MeasurementNeeded:
                pending = "model.routing.layer: auto is read off model.init_from's profile, not measured yet"
            setting = setting_for(launcher, launcher.for_variant(v.name), h)
            plan = plan_variant(v.name, cfg, len(spec.seeds), setting, towers)
            plan.eval_modes = len(modes(spec))
            if pending:
                plan.notes.append(pending)
            plans.append(plan)
            bar.update(job, advance=1, info=v.name)
    return StudyPlan(spec.name, len(spec.seeds), launcher, h, plans)


def with_pilot(plan: StudyPlan, pilot_dir: str | Path, effect: float, alpha: float, power: float) -> StudyPlan:
    """Add the power table: each comparison's noise in the pilot, at the planned study's questions and seeds."""
    questions = plan.variants[0].eval_questions if plan.variants else {}
    plan.power = pilot_power(pilot_dir, questions, plan.seeds, effect, alpha, power)
    plan.effect = effect
    return plan


def pilot_power(
    pilot_dir: str | Path, questions: dict[str, int], seeds: int, effect: float, alpha: float, power: float
) -> list[PowerRow]:
    """Each comparison's noise in the pilot study at `pilot_dir`, at a planned design's questions per task (a task
    not named: the pilot's count) and seeds (`study --plan --pilot` and `study --check --pilot`)."""
    from vlmlab.study.data import load_study_data

    return power_table(load_study_data(pilot_dir), questions, seeds, effect, alpha, power)


def job_minutes(plan: VariantPlan, launcher: LauncherSpec, resources: Resources) -> tuple[int, int]:
    """(minutes asked per job, requeues allowed) for one run of the variant: `time: auto` is the plan's wall time
    x `time_margin` + start-up, at most `max_time`; work longer than that continues in requeued jobs."""
    cap = minutes(launcher.max_time, "launcher.max_time")
    if resources.time not in (None, "auto"):
        return minutes(resources.time, "launcher.time"), launcher.max_requeue
    need = math.ceil(plan.wall_hours * 60 * launcher.time_margin) + JOB_OVERHEAD_MIN
    asked = min(cap, max(need, JOB_OVERHEAD_MIN + 10))
    return asked, launcher.max_requeue + math.ceil(need / asked) - 1
