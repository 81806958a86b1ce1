"""The `vlmlab` command line: train, eval, backbones, tasks, demo, data."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from vlmlab.errors import UserError
from vlmlab.progress import console

BUILTIN_CONFIGS = "configs"


def builtin_config(name: str) -> Path | None:
    path = resources.files("vlmlab") / BUILTIN_CONFIGS / f"{name}.yaml"
    return Path(str(path)) if path.is_file() else None


def resolve_config_path(arg: str) -> Path:
    """CONFIG may be a path or the name of a built-in config (e.g. `easy-vqa-tiny`)."""
    path = Path(arg)
    if path.is_file():
        return path
    builtin = builtin_config(arg)
    if builtin is not None:
        return builtin
    raise UserError(f"{arg}: config file not found (and no built-in config of that name)", exit_code=2)


def cmd_train(args) -> int:
    from vlmlab.config import load_config, parse_overrides
    from vlmlab.evaluation.evaluate import evaluate_run
    from vlmlab.train.trainer import Trainer

    cfg = load_config(resolve_config_path(args.config), parse_overrides(args.set or []))
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    result = Trainer(cfg, out, resume=args.resume).run_training()
    console.print(f"trained {result.steps} steps in {result.seconds:.0f}s ({result.samples_per_s:.0f} samples/s) -> {out}")
    if not args.no_eval and cfg.data.eval:
        metrics = evaluate_run(out, model=result.model.eval(), cfg=cfg)
        _print_metrics(metrics, out)
    return 0


def cmd_eval(args) -> int:
    from vlmlab.config import DataSource
    from vlmlab.evaluation.evaluate import evaluate_run

    sources = None
    if args.task:
        sources = []
        for spec in args.task:
            task, _, split = spec.partition(":")
            sources.append(DataSource(task=task, split=split or "test", limit=args.limit))
    from vlmlab.data.perturb import parse_perturbation

    perturb = parse_perturbation(args.perturb) if args.perturb else None
    metrics = evaluate_run(args.run_dir, sources, blind=args.blind, perturb=perturb)
    _print_metrics(metrics, Path(args.run_dir), mode="blind" if args.blind else perturb.tag if perturb else "")
    return 0


def cmd_backbones(args) -> int:
    from rich.table import Table

    from vlmlab.registry import ALL_REGISTRIES

    table = Table(title="registered parts")
    table.add_column("kind")
    table.add_column("id")
    table.add_column("description")
    for kind, registry in ALL_REGISTRIES.items():
        for part_id, cls in registry.items():
            table.add_row(kind, part_id, _summary(cls))
    console.print(table)
    return 0


def cmd_tasks(args) -> int:
    from rich.table import Table

    from vlmlab.data.tasks.declarative import DeclarativeTask
    from vlmlab.registry import TASKS

    table = Table(title="tasks (a YAML task names a format; a format is also usable as a task)")
    for col in ("id", "format", "answer", "metric", "categories", "description"):
        table.add_column(col)
    for task_id, cls in TASKS.items():
        if issubclass(cls, DeclarativeTask):
            s = cls.spec
            table.add_row(task_id, s.format, s.answer_type, s.metric, ", ".join(s.categories or ["all"]), _summary(cls))
        else:
            table.add_row(task_id, "(python)", cls.answer_type, "built in", "all", _summary(cls))
    console.print(table)
    return 0


def cmd_demo(args) -> int:
    from vlmlab.config import load_config
    from vlmlab.evaluation.evaluate import evaluate_run
    from vlmlab.runs import RunDir
    from vlmlab.train.trainer import Trainer

    cfg = load_config(builtin_config("easy-vqa-tiny"))
    out = Path(args.out)
    run = RunDir(out)
    if not (run.final / "model.safetensors").is_file():
        Trainer(cfg, out, resume=run.config.is_file()).run_training()
    metrics = evaluate_run(out)
    blind = evaluate_run(out, blind=True)
    _print_metrics(metrics, out)
    gap = blind["visual_reliance_gap"]["easy-vqa"]["gap"]
    console.print(f"blind (constant image) accuracy: {blind['overall']['accuracy']:.3f}  visual-reliance gap: {gap:+.3f}")
    console.print(f"records: {run.predictions()}  metrics: {run.metrics()}")
    return 0


def cmd_data_shapes_world(args) -> int:
    import time

    from vlmlab.data.shapes_world import SPLITS, generate

    t0 = time.perf_counter()
    counts = generate(args.out, args.seed, args.n, args.size, tuple(args.split_fractions))
    seconds = time.perf_counter() - t0
    questions = sum(counts[f"{s}_questions"] for s in SPLITS)
    console.print(f"wrote {counts['scenes']} scenes (train/val/test {counts['train_scenes']}/{counts['val_scenes']}/"
                  f"{counts['test_scenes']}) and {questions} questions to {args.out} in {seconds:.1f}s", soft_wrap=True)
    return 0


def _summary(cls) -> str:
    """The first line of a class's docstring ("" if none), escaped so `[x1, ...]` is not read as rich markup."""
    from rich.markup import escape

    lines = (cls.__doc__ or "").strip().splitlines()
    return escape(lines[0]) if lines else ""


def _print_metrics(metrics: dict, out: Path, mode: str = "") -> None:
    from rich.table import Table

    table = Table(title=f"{out} ({mode})" if mode else str(out))
    table.add_column("slice")
    table.add_column("accuracy", justify="right")
    table.add_column("n", justify="right")
    table.add_row("overall", f"{metrics['overall']['accuracy']:.3f}", str(metrics["overall"]["n"]))
    for name, m in metrics["per_category"].items():
        table.add_row(name, f"{m['accuracy']:.3f}", str(m["n"]))
    console.print(table)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlmlab", description="Controlled backbone studies of vision-language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a run from a YAML config (then evaluate it)")
    p.add_argument("config", help="config file, or the name of a built-in config (easy-vqa-tiny)")
    p.add_argument("--out", help="run directory (default runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--no-eval", action="store_true", help="skip evaluation after training")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained run; writes predictions.parquet and metrics.json")
    p.add_argument("run_dir")
    p.add_argument("--task", action="append", metavar="TASK[:SPLIT]", help="evaluate these instead of the config's")
    p.add_argument("--limit", type=int, help="at most this many items per --task")
    p.add_argument("--blind", action="store_true", help="replace every image by a constant (visual-reliance baseline)")
    p.add_argument("--perturb", metavar="noise:SIGMA|shift:PX", help="perturb every image deterministically (stability)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("backbones", help="list every registered part id by kind")
    p.set_defaults(func=cmd_backbones)

    p = sub.add_parser("tasks", help="list every task (YAML and built-in formats)")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("demo", help="the main job: train and evaluate the built-in demo")
    p.add_argument("--out", default="runs/demo")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("data", help="generate a synthetic dataset")
    gens = p.add_subparsers(dest="generator", required=True)
    g = gens.add_parser("shapes-world", help="seeded multi-object shape scenes with VQA and grounding questions")
    g.add_argument("--seed", type=int, required=True)
    g.add_argument("--n", type=int, required=True, help="number of scenes")
    g.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    g.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    g.add_argument("--split-fractions", type=float, nargs=3, default=[0.8, 0.1, 0.1], metavar=("TRAIN", "VAL", "TEST"),
                   help="fractions of scenes per split (default 0.8 0.1 0.1)")
    g.set_defaults(func=cmd_data_shapes_world)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
