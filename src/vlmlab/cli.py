"""The `vlmlab` command line: train, eval, export, study, report, analyze, attention, demo, pretrain-lm, backbones, tasks, data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.markup import escape

from vlmlab.config import builtin_config
from vlmlab.errors import UserError
from vlmlab.progress import console

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
    trainer = Trainer(cfg, out, resume=args.resume)
    result = trainer.run_training()
    main_process = trainer.accelerator.is_main_process  # under accelerate launch / torchrun: one process reports
    if main_process:
        console.print(f"trained {result.steps} steps in {result.seconds:.0f}s ({result.samples_per_s:.0f} samples/s) -> {out}")
    if not args.no_eval and cfg.data.eval:
        metrics = evaluate_run(out, model=result.model.eval(), cfg=trainer.cfg)  # items shared out over the processes
        if main_process:
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


def cmd_export(args) -> int:
    from vlmlab.interop.llava_export import export_hf_llava

    out = export_hf_llava(args.run_dir, args.out)
    console.print(f"wrote {out} (load with transformers: LlavaForConditionalGeneration.from_pretrained / "
                  "AutoProcessor.from_pretrained)", soft_wrap=True, highlight=False)
    return 0


def cmd_import_llava(args) -> int:
    from vlmlab.interop.llava_import import import_llava

    evals = []
    for spec in args.eval or []:
        spec, _, path = spec.partition("@")
        task, _, split = spec.partition(":")
        evals.append({"task": task, "split": split or "test", **({"path": path} if path else {})})
    out = import_llava(args.checkpoint, args.out, template=args.template, dtype=args.dtype,
                       allow_pickle=args.allow_pickle, evals=evals)
    console.print(f"wrote run {out}: now `vlmlab eval {out}`, `vlmlab attention {out}` (on its data.eval)",
                  soft_wrap=True, highlight=False)
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


def cmd_pretrain_lm(args) -> int:
    from pydantic import ValidationError

    from vlmlab.config import config_error, parse_overrides, set_dotted
    from vlmlab.registry import LLM_BACKBONES

    raw: dict = {}  # the same backbone fields for every rung
    for key, value in parse_overrides(args.set or []).items():
        set_dotted(raw, key, value)
    rows = []
    for part_id in args.ids:
        cls = LLM_BACKBONES.get(part_id, key="pretrain-lm")
        if not hasattr(cls, "pretrained_backbone"):
            raise UserError(f"pretrain-lm: {part_id!r} is not a tiny rung (it loads its own pretrained weights)", exit_code=2)
        try:
            params = cls.Params(**raw)
        except ValidationError as exc:
            raise config_error(exc, prefix="--set") from None
        rows.append(cls.pretrained_backbone(params))
    console.print("LM ladder (held-out bits per byte: lower is better)", highlight=False)
    console.print(f"{'rung':<13}{'non-emb':>9}{'params':>9}{'vocab':>7}{'ctx':>6}{'tokens':>8}{'epochs':>8}"
                  f"{'built':>8}{'bits/byte':>10}", highlight=False)
    for b in rows:
        r = b.record
        built = f"{r['seconds']:.0f} s" if b.built_now else "cached"
        console.print(f"{r['backbone']:<13}{r['parameters']['non_embedding'] / 1e6:>8.2f}M{r['parameters']['total'] / 1e6:>8.2f}M"
                      f"{r['vocab_size']:>7}{r['architecture']['context']:>6}{r['tokens_seen'] / 1e6:>7.2f}M{r['epochs']:>8.2f}"
                      f"{built:>8}{r['heldout']['bits_per_byte']:>10.4f}", highlight=False)
    for b in rows:
        console.print(f"{b.record['backbone']}: {b.path}", soft_wrap=True, highlight=False)
    return 0


def cmd_pretrain_vision(args) -> int:
    from vlmlab.progress import progress
    from vlmlab.train.vision_pretrain import mean_top1, pretrain_study_towers

    with progress() as bar:
        rows = pretrain_study_towers(resolve_study_path(args.spec), args.out, bar)
    console.print("matched vision pretraining (mean top-1 over the attributes; held-out = images never trained on)",
                  highlight=False)
    console.print(f"{'variant':<12}{'seed':>5}{'tower':>8}{'params':>10}{'images':>8}{'train':>8}{'held-out':>10}{'time':>9}",
                  highlight=False)
    for r in rows:
        held = mean_top1(r, "heldout_top1/")
        time_s = "cached" if r.get("cached") else f"{r['seconds']:.0f} s"
        console.print(f"{r['variant']:<12}{r['seed']:>5}{r['tower']:>8}{r['parameters']:>10,}{r.get('images', 0):>8}"
                      f"{mean_top1(r, 'train_top1/') or float('nan'):>8.3f}{held if held is not None else float('nan'):>10.3f}"
                      f"{time_s:>9}", highlight=False)
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


def resolve_study_path(arg: str) -> Path:
    """SPEC may be a path or the name of a built-in study (e.g. `demo`, `demo-quick`)."""
    path = Path(arg)
    if path.is_file():
        return path
    builtin = builtin_config(arg, kind="studies")
    if builtin is not None:
        return builtin
    raise UserError(f"{arg}: study spec not found (and no built-in study of that name)", exit_code=2)


def cmd_study(args) -> int:
    from vlmlab.io import write_text
    from vlmlab.study.runner import job_script, prepare_study, run_study

    spec_path = resolve_study_path(args.spec)
    if args.check or args.script:
        study = prepare_study(spec_path, args.out)
        names = list(dict.fromkeys(v.name for v in study.variants))
        console.print(f"control check passed: {len(names)} variants x {len(study.spec.seeds)} seeds, held-constant "
                      f"fingerprint {study.control['config']['fingerprint']}", soft_wrap=True)
        if args.script:
            write_text(args.script, job_script(spec_path, study))
            console.print(f"wrote one job per variant to {args.script}", soft_wrap=True)
        return 0
    study = run_study(spec_path, args.out, only=args.only)
    if study.dir.results.is_file() and not args.only:
        _print_study_summary(study.dir.path)
        console.print(f"results: {study.dir.results}  summary: {study.dir.summary}  (report: vlmlab report {study.dir.path})")
    return 0


def cmd_report(args) -> int:
    from vlmlab.report.study_report import build_report

    html_path, md_path = build_report(args.study_dir)
    console.print(f"wrote {html_path} and {md_path}")
    return 0


def cmd_analyze(args) -> int:
    from vlmlab.registry import ANALYSES
    from vlmlab.report.study_report import build_report

    only = None
    if args.only:
        only = [a.strip() for a in args.only.split(",") if a.strip()]
        for a in only:
            ANALYSES.get(a, key="--only")
    elif args.all:
        only = [a for a, _ in ANALYSES.items()]
    html_path, _ = build_report(args.study_dir, only=only)
    console.print(f"wrote {Path(args.study_dir) / 'analysis'}/*.json and the figures beside them; refreshed {html_path}",
                  soft_wrap=True)
    return 0


def cmd_attention(args) -> int:
    from vlmlab.analysis.attention import RECORD, attention_profile

    record = attention_profile(args.run_dir, n_probe=args.n_probe, threshold=args.threshold, batch_size=args.batch_size)
    console.print(f"text → image attention share per layer ({record['items']} probe items, {record['image_tokens']} "
                  "vision tokens; mean over heads, text positions, items; head range in brackets)", highlight=False)
    for i, (s, lo, hi) in enumerate(zip(record["share"], record["head_min"], record["head_max"])):
        console.print(f"  layer {i:>3}  {s:.4f}  [{lo:.4f}, {hi:.4f}]  " + "#" * round(40 * s), highlight=False)
    sat = record["saturation_layer"]
    console.print(f"saturation layer (share < {record['threshold']} from here on): {sat if sat is not None else 'none'}; "
                  f"wrote {Path(args.run_dir) / RECORD}", highlight=False, soft_wrap=True)
    return 0


def cmd_bench_routing(args) -> int:
    from vlmlab.evaluation.routing_bench import bench_routing

    r = bench_routing(args.run_dir, args.fastv_layer, args.fastv_ratio, args.dpvr_layer, args.n_probe, args.eval_limit)
    g = r["geometry"]
    console.print(f"{r['probe_items']} prompts, {g['vision']} vision + ~{g['text']} text tokens, {g['layers']} layers, "
                  f"{r['device']}; ratios against full", highlight=False)
    console.print(f"{'strategy':<28}{'GFLOPs':>8}{'ratio':>7}{'analytic':>9}{'prefill':>8}{'decode':>7}"
                  + ("{:>7}".format("acc") if args.eval_limit else ""), highlight=False)
    for s in r["strategies"]:
        console.print(f"{s['strategy']:<28}{s['counted_prefill_gflops']:>8.3f}{s['counted_prefill_ratio']:>7.3f}"
                      f"{s['analytic_prefill_ratio']:>9.3f}{s['prefill_ratio']:>8.3f}{s['decode_token_ratio']:>7.3f}"
                      + (f"{s['accuracy']:>7.3f}" if args.eval_limit else ""), highlight=False)
    p = r["paper_geometry"]
    console.print(f"paper geometry (576 vision + 60 text tokens, 32 layers, route after {p['dpvr_layer']}): analytic "
                  f"prefill FLOPs DPVR/full {p['dpvr_over_full']:.3f}, FastV(K=2, R=0.5)/full {p['fastv_K2_R0.5_over_full']:.3f}; "
                  f"wrote {Path(args.run_dir) / 'routing_bench.json'}", highlight=False, soft_wrap=True)
    return 0


def cmd_bench_vision(args) -> int:
    from vlmlab import io
    from vlmlab.evaluation.vision_bench import bench_vision, growth, plot
    from vlmlab.report.document import figure_png

    table = bench_vision(resolve_study_path(args.spec), args.sizes, batch=args.batch, repeats=args.repeats)
    out = Path(args.out)
    measured = table.dropna(subset=["forward_ms"]) if "forward_ms" in table else table
    for row in measured.itertuples():
        console.print(f"{row.tower:<10}{row.side:>5} px {row.tokens:>6} tokens {row.forward_ms:>9.1f} ms "
                      f"{row.activation_mib:>9.1f} MiB", highlight=False)
    if "skipped" in table:
        for row in table[table["skipped"].notna()].itertuples():
            console.print(f"{row.tower:<10}{row.side:>5} px skipped: {row.skipped}", highlight=False)
    grow = growth(table)
    for row in grow.itertuples():
        console.print(f"{row.tower}: {row.from_px} -> {row.to_px} px costs {row.time_x:.1f}x the time and "
                      f"{row.activation_x:.1f}x the activation memory", highlight=False)
    io.write_json(out / "vision_bench.json", {"spec": args.spec, "batch": args.batch, "rows": table.to_dict(orient="records"),
                                              "growth": grow.to_dict(orient="records")})
    io.write_bytes(out / "vision_bench.png", figure_png(plot(table), dpi=120))
    console.print(f"wrote {out / 'vision_bench.json'} and {out / 'vision_bench.png'}", soft_wrap=True, highlight=False)
    return 0


def cmd_demo(args) -> int:
    from vlmlab.report.study_report import build_report
    from vlmlab.study.runner import run_study

    if args.quick and args.study != "llm":
        raise UserError("--quick is the small version of the LLM-generation study (--study llm)", exit_code=2)
    name = {"llm": "demo-quick" if args.quick else "demo", "vision": "demo-vision", "routing": "demo-routing"}[args.study]
    out = Path(args.out or f"runs/{name}")
    study = run_study(resolve_study_path(name), out)
    html_path, _ = build_report(out)
    _print_study_summary(out)
    analyses = ", ".join(a.id for a in study.spec.analyses)
    console.print(f"\n[bold]Open {html_path}[/bold] for the figures: accuracy per task and category with 95% CIs, "
                  f"the control check, training curves, costs and the analyses ({analyses}).", soft_wrap=True)
    console.print(f"Per-item records: {study.dir.results} (one row per item, variant, seed and evaluation mode).", soft_wrap=True)
    return 0


def _print_study_summary(path: Path) -> None:
    import pandas as pd
    from rich.table import Table

    summary = pd.read_csv(path / "summary.csv")
    clean = summary[(summary["mode"] == "clean") & (summary["category"] == "all")]
    variants = list(dict.fromkeys(clean["variant"]))
    table = Table(title=f"{path}: accuracy per task (± half-width of the 95% CI)")
    table.add_column("task")
    for v in variants:
        table.add_column(v, justify="right")
    for task, frame in clean.groupby("task", sort=False):
        cells = []
        for v in variants:
            r = frame[frame["variant"] == v].iloc[0]
            cells.append(f"{r['accuracy']:.3f} ±{(r['ci_high'] - r['ci_low']) / 2:.3f}")
        table.add_row(task, *cells)
    console.print(table)


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


def cmd_data_check(args) -> int:
    from pydantic import ValidationError

    from vlmlab.config import DataSource, config_error
    from vlmlab.data.check import check_dataset

    task, _, split = args.task.partition(":")
    try:
        source = DataSource(task=task, split=split or "test", limit=args.limit, path=args.path)
    except ValidationError as exc:
        raise config_error(exc, prefix="data") from None
    report = check_dataset(source)
    console.print(f"{args.task}: {report['items']} items over {report['images']} images, all readable; "
                  f"categories {report['categories']}; answers {report['answer_types']}; "
                  f"image sizes {report['image_sizes']}", soft_wrap=True, highlight=False)
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

    p = sub.add_parser("export", help="write a trained run in a standard format (hf-llava: LlavaForConditionalGeneration)")
    p.add_argument("run_dir")
    p.add_argument("out", help="output directory (must not exist or be empty)")
    p.add_argument("--format", choices=["hf-llava"], default="hf-llava")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import-llava", help="make a LLaVA-format HF checkpoint a run dir (eval, attention, analyses)")
    p.add_argument("checkpoint", help="local dir of a LlavaForConditionalGeneration checkpoint (e.g. llava-1.5-7b-hf)")
    p.add_argument("out", help="run directory to create (must not exist or be empty)")
    p.add_argument("--template", choices=["native", "vicuna", "llama3"], default="native",
                   help="prompt format (default: the checkpoint's own chat template)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--allow-pickle", action="store_true", help="load .bin weights (pickle) if there are no safetensors")
    p.add_argument("--eval", action="append", metavar="TASK[:SPLIT][@PATH]",
                   help="evaluation task written into the run's data.eval (repeatable), e.g. pope:test@/data/pope")
    p.set_defaults(func=cmd_import_llava)

    p = sub.add_parser("backbones", help="list every registered part id by kind")
    p.set_defaults(func=cmd_backbones)

    p = sub.add_parser("pretrain-lm", help="pretrain the tiny LLaMA ladder on the offline corpus (cached; prints bits/byte)")
    p.add_argument("ids", nargs="*", default=["llama1-tiny", "llama2-tiny", "llama3-tiny"], metavar="ID",
                   help="rungs to build (default: the whole ladder)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a backbone field for every rung, e.g. hidden_size=64 or pretrain.tokens=200000")
    p.set_defaults(func=cmd_pretrain_lm)

    p = sub.add_parser("pretrain-vision", help="matched vision pretraining of a study's towers (cached; prints top-1)")
    p.add_argument("spec", nargs="?", default="demo-vision", help="study whose towers to pretrain (default demo-vision)")
    p.add_argument("--out", help="the study directory its runs will use (default runs/<name>)")
    p.set_defaults(func=cmd_pretrain_vision)

    p = sub.add_parser("tasks", help="list every task (YAML and built-in formats)")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("study", help="run a controlled study: control check, train + evaluate every variant, combine")
    p.add_argument("spec", help="study YAML, or the name of a built-in study (demo, demo-quick)")
    p.add_argument("--out", help="study directory (default runs/<name>)")
    p.add_argument("--only", action="append", metavar="VARIANT", help="run only this variant (repeatable; one cluster job each)")
    p.add_argument("--check", action="store_true", help="resolve the variants and run the control check only")
    p.add_argument("--script", metavar="FILE", help="write a shell script with one job per variant, then stop")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("report", help="write report.html (self-contained) and report.md for a finished study")
    p.add_argument("study_dir")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("analyze", help="run analyses on a finished study: analysis/<id>.json + figures, refreshed report")
    p.add_argument("study_dir")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--only", metavar="IDS", help="comma-separated analysis ids (default: the spec's analyses)")
    group.add_argument("--all", action="store_true", help="every registered analysis")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("attention", help="text→image attention share per LLM layer of a trained run, and its saturation layer")
    p.add_argument("run_dir")
    p.add_argument("--n-probe", type=int, default=256, help="probe items from the run's evaluation tasks (default 256)")
    p.add_argument("--threshold", type=float, default=0.1, help="saturation: share below this from a layer on (default 0.1)")
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(func=cmd_attention)

    p = sub.add_parser("bench", help="cost measurements on a trained run")
    benches = p.add_subparsers(dest="bench", required=True)
    b = benches.add_parser("routing", help="full vs FastV vs DPVR: prefill FLOPs (counted + analytic), latency, memory")
    b.add_argument("run_dir")
    b.add_argument("--fastv-layer", type=int, default=2)
    b.add_argument("--fastv-ratio", type=float, default=0.5)
    b.add_argument("--dpvr-layer", type=int, default=None, help="default: the run's own DPVR layer, else L/2")
    b.add_argument("--n-probe", type=int, default=64, help="prompts in the timed batch (default 64)")
    b.add_argument("--eval-limit", type=int, default=0, help="also evaluate each strategy on N items per task")
    b.set_defaults(func=cmd_bench_routing)

    b = benches.add_parser("vision", help="forward latency and activation memory of each vision tower as the image grows")
    b.add_argument("spec", nargs="?", default="demo-vision", help="study whose vision factor names the towers (default demo-vision)")
    b.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512], metavar="PX")
    b.add_argument("--batch", type=int, default=1, help="images per forward (default 1)")
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--out", default="runs/bench-vision", help="directory for vision_bench.json and .png")
    b.set_defaults(func=cmd_bench_vision)

    p = sub.add_parser("demo", help="the main job: the built-in study of LLM generations on easy-VQA + shapes-world")
    p.add_argument("--quick", action="store_true", help="a smaller version for a first look (a few minutes)")
    p.add_argument("--study", choices=["llm", "vision", "routing"], default="llm",
                   help="llm: study A, LLM generations (default); vision: study B, ViT vs Vim vs VMamba; "
                        "routing: study C, full vs FastV vs DPVR on the llm demo's gen3 model")
    p.add_argument("--out", help="study directory (default runs/demo or runs/demo-quick)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("data", help="generate a synthetic dataset, or check one before training on it")
    gens = p.add_subparsers(dest="generator", required=True)
    g = gens.add_parser("shapes-world", help="seeded multi-object shape scenes with VQA and grounding questions")
    g.add_argument("--seed", type=int, required=True)
    g.add_argument("--n", type=int, required=True, help="number of scenes")
    g.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    g.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    g.add_argument("--split-fractions", type=float, nargs=3, default=[0.8, 0.1, 0.1], metavar=("TRAIN", "VAL", "TEST"),
                   help="fractions of scenes per split (default 0.8 0.1 0.1)")
    g.set_defaults(func=cmd_data_shapes_world)
    g = gens.add_parser("check", help="load a dataset and decode every image (a bad record or image: one line, exit 1)")
    g.add_argument("task", metavar="TASK[:SPLIT]", help="task id (vlmlab tasks) and split (default test)")
    g.add_argument("--path", help="the dataset's file or directory, for tasks over local files")
    g.add_argument("--limit", type=int, help="check at most this many items")
    g.set_defaults(func=cmd_data_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)  # `[key]` is text
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
