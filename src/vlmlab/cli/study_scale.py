"""`vlmlab study SPEC --plan` (what the study will cost, before anything runs) and `vlmlab study SPEC --launcher
slurm|local` (submit it through submitit): their options and their bodies."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vlmlab.errors import UserError
from vlmlab.progress import console

# command-line flags that set a key of the spec's `launcher:` block
FLAGS = {
    "partition": str,
    "account": str,
    "gpu": str,
    "gpus_per_node": int,
    "nodes": int,
    "time": str,
    "strategy": str,
    "mfu": float,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster scale (docs/scaling.md)")
    g.add_argument("--plan", action="store_true", help="print each variant's parameters, memory per GPU, FLOPs, "
                   "steps and GPU-hours, and the study's total; run nothing")  # fmt: skip
    g.add_argument("--plan-json", metavar="FILE", help="with --plan: also write every number to FILE")
    g.add_argument("--pilot", metavar="DIR", help="with --plan or --check: a finished pilot study whose per-item "
                   "records give each comparison's noise (this design's MDE, questions and seeds needed)")  # fmt: skip
    g.add_argument("--effect", type=float, default=0.02, help="the difference to detect (accuracy; default 0.02)")
    g.add_argument("--alpha", type=float, default=0.05, help="two-sided test level (default 0.05)")
    g.add_argument("--power", type=float, default=0.80, help="chance to detect --effect (default 0.80)")
    g.add_argument("--launcher", choices=["slurm", "local"], help="submit every incomplete run as a submitit job "
                   "(arrays), then a combine job; complete runs are skipped")  # fmt: skip
    g.add_argument("--launcher-set", action="append", metavar="KEY=VALUE", help="override a key of the spec's "
                   "launcher block, e.g. variants.gen3.gpus_per_node=8 (repeatable)")  # fmt: skip
    for name, kind in FLAGS.items():
        g.add_argument(f"--{name.replace('_', '-')}", type=kind, metavar=name.upper(), help=f"launcher.{name}")


def wanted(args) -> bool:
    return bool(args.plan or args.launcher)


def launcher_overrides(args) -> dict[str, Any]:
    """The launcher keys set on the command line (`--launcher-set` first, then the named flags)."""
    from vlmlab.io import parse_yaml

    out: dict[str, Any] = {}
    for item in args.launcher_set or []:
        if "=" not in item:
            raise UserError(f"--launcher-set {item!r}: expected KEY=VALUE", exit_code=2)
        key, value = (part.strip() for part in item.split("=", 1))
        # a time stays text: YAML would read 12:00:00 as the number 43200
        out[key] = (
            value if key.split(".")[-1] in ("time", "max_time") else parse_yaml(value, f"--launcher-set {item!r}")
        )
    for name in FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    return out


def resolve_target(arg: str) -> Path:
    """SPEC: a path, a built-in study (demo, demo-quick) or, for --plan, a built-in config (easy-vqa-tiny)."""
    from vlmlab.config import builtin_config

    path = Path(arg)
    if path.is_file():
        return path
    found = builtin_config(arg, kind="studies") or builtin_config(arg)
    if found is None:
        raise UserError(f"{arg}: study spec or config not found (and no built-in one of that name)", exit_code=2)
    return found


def cmd_study_scale(args) -> int:
    from vlmlab.study.launcher import with_overrides
    from vlmlab.study.spec import load_study_spec

    if args.check or args.script or args.only:
        raise UserError("--plan and --launcher go without --check, --script and --only", exit_code=2)
    if args.pilot and not args.plan:
        raise UserError("--pilot goes with --plan or --check", exit_code=2)
    from vlmlab.plan.study import is_run_config
    from vlmlab.study.launcher import LauncherSpec

    spec_path = resolve_target(args.spec)
    recipe = is_run_config(spec_path)
    if recipe and not args.plan:
        raise UserError(f"{spec_path}: a run config, not a study; --launcher submits studies", exit_code=2)
    base = LauncherSpec() if recipe else load_study_spec(spec_path)[0].launcher
    launcher = with_overrides(base, launcher_overrides(args))
    if args.plan:
        return _plan(args, spec_path, launcher, recipe)
    from vlmlab.launch.submit import submit_study

    return submit_study(spec_path, args.out, launcher, args.launcher)


def check_power_args(args) -> None:
    """--effect, --alpha and --power each in (0, 1), or one line naming the flag."""
    for name, value in (("--effect", args.effect), ("--alpha", args.alpha), ("--power", args.power)):
        if not 0 < value < 1:
            raise UserError(f"{name} {value}: must lie in (0, 1)", exit_code=2)


def print_pilot_power(study, pilot_dir: str, args) -> None:
    """`study --check --pilot DIR`: what the prepared study's design detects, from the pilot's paired noise."""
    from vlmlab.plan.render import print_power
    from vlmlab.plan.study import pilot_power

    check_power_args(args)
    sources = study.variants[0].cfg.data.eval if study.variants else []
    questions = {s.task: s.limit for s in sources if s.limit}
    print_power(
        pilot_power(pilot_dir, questions, len(study.spec.seeds), args.effect, args.alpha, args.power), args.effect
    )


def _plan(args, spec_path: Path, launcher, recipe: bool) -> int:
    from vlmlab.io import write_json
    from vlmlab.plan.render import plan_json, print_plan
    from vlmlab.plan.study import plan_config, plan_study, with_pilot

    check_power_args(args)
    plan = plan_config(spec_path, launcher) if recipe else plan_study(spec_path, launcher)
    if args.pilot:
        plan = with_pilot(plan, args.pilot, args.effect, args.alpha, args.power)
    print_plan(plan)
    if args.plan_json:
        write_json(args.plan_json, plan_json(plan))
        console.print(f"wrote the plan to {args.plan_json}", soft_wrap=True, highlight=False)
    return 0
