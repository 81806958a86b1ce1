"""What each `vlmlab` command does (`cmd_<name>(args) -> exit code`); the parser lives in `vlmlab.cli`.

Each command imports what it runs when it runs, so `vlmlab --help` answers without loading torch; the
import rule (tests/test_layers.py) checks these imports like any other."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from vlmlab.config import builtin_config
from vlmlab.errors import UserError
from vlmlab.parts import load_builtin_parts
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
    from vlmlab.measure.resolve import resolve_with_measurements
    from vlmlab.train.trainer import Trainer

    cfg = load_config(resolve_config_path(args.config), parse_overrides(args.set or []))
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    cfg = resolve_with_measurements(cfg)  # DPVR `layer: auto`: read off (or first measure) model.init_from's profile
    if not args.no_eval:  # the evaluation data is read now: a bad record is found before training, not after it
        from vlmlab.data.sources import load_source

        for i, source in enumerate(cfg.data.eval):
            load_source(source, f"data.eval.{i}", cfg.data.image)
    trainer = Trainer(cfg, out, resume=args.resume)
    result = trainer.run_training()
    main_process = trainer.accelerator.is_main_process  # under accelerate launch / torchrun: one process reports
    if main_process:
        console.print(
            f"trained {result.steps} steps in {result.seconds:.0f}s ({result.samples_per_s:.0f} samples/s) -> {out}"
        )
    if not args.no_eval and cfg.data.eval:
        metrics = evaluate_run(out, model=result.model.eval(), cfg=cfg)  # items shared out over the processes
        if main_process:
            _print_metrics(metrics, out)
    return 0


def cmd_eval(args) -> int:
    from vlmlab.config import DataSource
    from vlmlab.data.eval_mode import CLEAN, EvalMode
    from vlmlab.data.perturb import parse_perturbation
    from vlmlab.evaluation.evaluate import evaluate_run

    sources = None
    if args.task:
        sources = []
        for spec in args.task:
            task, _, split = spec.partition(":")
            sources.append(DataSource(task=task, split=split or "test", limit=args.limit))
    elif args.limit:  # the run's own evaluation tasks, each cut to --limit items
        sources = limited_eval_sources(Path(args.run_dir), args.limit)
    mode = EvalMode(blind=args.blind, perturbation=parse_perturbation(args.perturb) if args.perturb else None)
    metrics = evaluate_run(args.run_dir, sources, mode=mode)
    _print_metrics(metrics, Path(args.run_dir), mode="" if mode == CLEAN else mode.name)
    return 0


def limited_eval_sources(run_dir: Path, limit: int) -> list | None:
    """The run's `data.eval` with every source cut to at most `limit` items (None when it is not a run)."""
    from vlmlab.config import load_config
    from vlmlab.runs import RunDir

    run = RunDir(run_dir)
    if not run.config.is_file():
        return None  # evaluate_run says what is missing
    eval_sources = load_config(run.config).data.eval
    return [s.model_copy(update={"limit": min(s.limit or limit, limit)}) for s in eval_sources] or None


def cmd_score(args) -> int:
    from pydantic import ValidationError

    from vlmlab.config import DataSource, ImageConfig, load_config
    from vlmlab.errors import validation_error
    from vlmlab.evaluation.score import AnswerFile, score_answers
    from vlmlab.runs import RunDir

    if bool(args.file) == bool(args.predictions):
        raise UserError("score: give the answers file once (FILE or --predictions FILE)", exit_code=2)
    answers = AnswerFile(
        Path(args.file or args.predictions),
        args.answers_format,
        args.harness_task,
        Path(args.index_map) if args.index_map else None,
        Path(args.docs) if args.docs else None,
    )
    task, _, split = args.task.partition(":")
    try:
        source = DataSource(task=task, split=split or "test", limit=args.limit, path=args.path)
        if args.run:
            if args.geometry:
                raise UserError("--geometry comes from the run with --run; give one or the other", exit_code=2)
            image = load_config(RunDir(args.run).config).data.image
        else:
            fields = {"size": args.image_size, "geometry": args.geometry}
            image = ImageConfig(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise validation_error(exc, prefix="score") from None
    out = Path(args.out)
    metrics = score_answers(source, answers, image, out)
    _print_metrics(metrics, out, mode="scored")
    _print_mapping(metrics["scored"])
    console.print(f"wrote {RunDir(out).predictions()} and {RunDir(out).metrics()}", soft_wrap=True, highlight=False)
    return 0


def cmd_export(args) -> int:
    from vlmlab.interop.llava_export import export_hf_llava

    out = export_hf_llava(args.run_dir, args.out)
    console.print(
        f"wrote {out} (load with transformers: LlavaForConditionalGeneration.from_pretrained / "
        "AutoProcessor.from_pretrained)",
        soft_wrap=True,
        highlight=False,
    )
    return 0


def cmd_import_llava(args) -> int:
    from vlmlab.interop.llava_import import import_llava

    evals = []
    for spec in args.eval or []:
        spec, _, path = spec.partition("@")
        task, _, split = spec.partition(":")
        evals.append({"task": task, "split": split or "test", **({"path": path} if path else {})})
    out = import_llava(
        args.checkpoint, args.out, template=args.template, dtype=args.dtype, allow_pickle=args.allow_pickle, evals=evals
    )
    console.print(
        f"wrote run {out}: now `vlmlab eval {out}`, `vlmlab attention {out}` (on its data.eval)",
        soft_wrap=True,
        highlight=False,
    )
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

    from vlmlab.config import parse_overrides, set_dotted
    from vlmlab.errors import validation_error
    from vlmlab.registry import LLM_BACKBONES

    raw: dict = {}  # the same backbone fields for every rung
    for key, value in parse_overrides(args.set or []).items():
        set_dotted(raw, key, value)
    rows = []
    for part_id in args.ids:
        cls = LLM_BACKBONES.get(part_id, key="pretrain-lm")
        if not hasattr(cls, "pretrained_backbone"):
            raise UserError(
                f"pretrain-lm: {part_id!r} is not a tiny rung (it loads its own pretrained weights)", exit_code=2
            )
        try:
            params = cls.Params(**raw)
        except ValidationError as exc:
            raise validation_error(exc, prefix="--set") from None
        rows.append(cls.pretrained_backbone(params))
    console.print("LM ladder (held-out bits per byte: lower is better)", highlight=False)
    console.print(
        f"{'rung':<13}{'non-emb':>9}{'params':>9}{'vocab':>7}{'ctx':>6}{'tokens':>8}{'epochs':>8}"
        f"{'built':>8}{'bits/byte':>10}",
        highlight=False,
    )
    for b in rows:
        r = b.record
        built = f"{r['seconds']:.0f} s" if b.built_now else "cached"
        console.print(
            f"{r['backbone']:<13}{r['parameters']['non_embedding'] / 1e6:>8.2f}M{r['parameters']['total'] / 1e6:>8.2f}M"
            f"{r['vocab_size']:>7}{r['architecture']['context']:>6}{r['tokens_seen'] / 1e6:>7.2f}M{r['epochs']:>8.2f}"
            f"{built:>8}{r['heldout']['bits_per_byte']:>10.4f}",
            highlight=False,
        )
    for b in rows:
        console.print(f"{b.record['backbone']}: {b.path}", soft_wrap=True, highlight=False)
    return 0


def cmd_pretrain_vision(args) -> int:
    from vlmlab.measure.towers import pretrain_towers
    from vlmlab.progress import progress
    from vlmlab.study.runner import prepare_study
    from vlmlab.train.vision_pretrain import mean_top1

    study = prepare_study(resolve_study_path(args.spec), args.out)
    with progress() as bar:
        rows = pretrain_towers([(v.name, v.seed, v.cfg) for v in study.variants], study.dir.vision_cache, bar)
    console.print(
        "matched vision pretraining (mean top-1 over the attributes, per object token for `dense`; held-out = images"
        " never trained on; box IoU: `dense` objects' boxes read off their tokens, held-out if any)",
        highlight=False,
    )
    console.print(
        f"{'variant':<12}{'seed':>5}{'tower':>8}{'params':>10}{'images':>8}{'train':>8}{'held-out':>10}{'box IoU':>9}"
        f"{'time':>9}",
        highlight=False,
    )
    for r in rows:
        held = mean_top1(r, "heldout_top1/")
        iou = r.get("heldout_box_iou", r.get("train_box_iou"))
        time_s = "cached" if r.get("cached") else f"{r['seconds']:.0f} s"
        console.print(
            f"{r['variant']:<12}{r['seed']:>5}{r['tower']:>8}{r['parameters']:>10,}{r.get('images', 0):>8}"
            f"{mean_top1(r, 'train_top1/') or float('nan'):>8.3f}{held if held is not None else float('nan'):>10.3f}"
            f"{'-' if iou is None else f'{iou:.3f}':>9}{time_s:>9}",
            highlight=False,
        )
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
    from vlmlab.cli import study_scale
    from vlmlab.cli.pipeline import analyze_and_report
    from vlmlab.distributed import barrier, is_main_process
    from vlmlab.io import write_text
    from vlmlab.study.runner import job_script, prepare_study, run_study

    if study_scale.wanted(args):  # --plan, --launcher
        return study_scale.cmd_study_scale(args)
    spec_path = resolve_study_path(args.spec)
    if args.pilot and not args.check:
        raise UserError("--pilot goes with --plan or --check", exit_code=2)
    if args.check or args.script:
        study = prepare_study(spec_path, args.out)
        names = list(dict.fromkeys(v.name for v in study.variants))
        if names:
            console.print(
                f"control check passed: {len(names)} variants x {len(study.spec.seeds)} seeds, held-constant "
                f"fingerprint {study.control['config']['fingerprint']}",
                soft_wrap=True,
            )
        for ext in study.external:
            files = ", ".join(str(f) for f in ext.files())
            console.print(
                f"external {ext.name} ({', '.join(f'{k}={v}' for k, v in ext.levels.items())}): answers from {files}; "
                "the control check cannot verify its recipe, training data, data order, parts or environment",
                soft_wrap=True,
                highlight=False,
            )
        for measurement, key, run_name in study.pending:
            console.print(
                f"{run_name}: {key} will be read off the {measurement.describe()}, measured before training",
                soft_wrap=True,
                highlight=False,
            )
        if args.pilot:
            study_scale.print_pilot_power(study, args.pilot, args)
        if args.script:
            write_text(args.script, job_script(spec_path, study))
            console.print(f"wrote one job per variant to {args.script}", soft_wrap=True)
        return 0
    study = run_study(spec_path, args.out, only=args.only, jobs=args.jobs, prepare_process=load_builtin_parts)
    if study.dir.complete.is_file() and not args.only:
        if is_main_process():
            analyze_and_report(study.dir.path, report=False)
        barrier()
        _print_study_summary(study.dir.path)
        console.print(
            f"results: {study.dir.results}  summary: {study.dir.summary}  analyses: {study.dir.analysis}  "
            f"(report: vlmlab report {study.dir.path})",
            soft_wrap=True,
        )
    return 0


def cmd_report(args) -> int:
    from vlmlab.report.study_report import build_report

    html_path, md_path = build_report(args.study_dir)
    console.print(f"wrote {html_path} and {md_path}")
    return 0


def cmd_analyze(args) -> int:
    from vlmlab.cli.pipeline import analyze_and_report
    from vlmlab.registry import ANALYSES

    only = None
    if args.only:
        only = [a.strip() for a in args.only.split(",") if a.strip()]
        for a in only:
            ANALYSES.get(a, key="--only")
    elif args.all:
        only = ANALYSES.ids()
    written, html_path = analyze_and_report(args.study_dir, only=only)
    console.print(
        f"wrote {len(written)} analysis results to {Path(args.study_dir) / 'analysis'}/; refreshed {html_path}",
        soft_wrap=True,
    )
    return 0


def cmd_attention(args) -> int:
    from vlmlab.measure.attention import AttentionProfile
    from vlmlab.measure.base import measure_all

    profile = AttentionProfile(args.run_dir, n_probe=args.n_probe, batch_size=args.batch_size)
    if not measure_all([profile]):
        console.print(f"{profile.describe()}: measured before, read from {profile.path}", soft_wrap=True)
    record = profile.profile(args.threshold)
    console.print(
        f"text → image attention share per layer ({record['items']} probe items, {record['image_tokens']} "
        "vision tokens; mean over heads, text positions, items; head range in brackets)",
        highlight=False,
    )
    for i, (s, lo, hi) in enumerate(zip(record["share"], record["head_min"], record["head_max"])):
        console.print(f"  layer {i:>3}  {s:.4f}  [{lo:.4f}, {hi:.4f}]  " + "#" * round(40 * s), highlight=False)
    sat = record["saturation_layer"]
    console.print(
        f"saturation layer (share < {record['threshold']} from here on): {sat if sat is not None else 'none'}; "
        f"stored in {profile.path}",
        highlight=False,
        soft_wrap=True,
    )
    return 0


def cmd_bench_routing(args) -> int:
    from vlmlab.measure.routing_bench import bench_routing

    r = bench_routing(args.run_dir, args.fastv_layer, args.fastv_ratio, args.dpvr_layer, args.n_probe, args.eval_limit)
    g = r["geometry"]
    console.print(
        f"{r['probe_items']} prompts, {g['vision']} vision + ~{g['text']} text tokens, {g['layers']} layers, "
        f"{r['device']}; ratios against full",
        highlight=False,
    )
    memory = r["strategies"][0]["peak_mib"] is not None  # CUDA only
    console.print(
        f"{'strategy':<28}{'GFLOPs':>10}{'ratio':>7}{'analytic':>9}{'prefill':>8}{'decode':>7}"
        + ("{:>11}{:>7}".format("peak MiB", "ratio") if memory else "")
        + ("{:>7}".format("acc") if args.eval_limit else ""),
        highlight=False,
    )
    for s in r["strategies"]:
        console.print(
            f"{s['strategy']:<28}{s['counted_prefill_gflops']:>10.3f}{s['counted_prefill_ratio']:>7.3f}"
            f"{s['analytic_prefill_ratio']:>9.3f}{s['prefill_ratio']:>8.3f}{s['decode_token_ratio']:>7.3f}"
            + (f"{s['peak_mib']:>11.1f}{s['peak_ratio']:>7.3f}" if memory else "")
            + (f"{s['accuracy']:>7.3f}" if args.eval_limit else ""),
            highlight=False,
        )
    p = r["paper_geometry"]
    settings = ", ".join(
        f"{part_id} ({', '.join(f'{k}={v}' for k, v in s['params'].items())}) {s['over_full']:.3f}"
        for part_id, s in p["strategies"].items()
    )
    console.print(
        f"paper geometry ({p['vision']} vision + {p['text']} text tokens, {p['layers']} layers): analytic prefill "
        f"FLOPs over full at each strategy's paper setting: {settings}; wrote {Path(args.run_dir) / 'routing_bench.json'}",
        highlight=False,
        soft_wrap=True,
    )
    return 0


def cmd_bench_vision(args) -> int:
    from vlmlab import io
    from vlmlab.measure.vision_bench import bench_vision, growth, plot
    from vlmlab.render.document import figure_png
    from vlmlab.study.spec import tower_levels

    levels = tower_levels(resolve_study_path(args.spec))
    table = bench_vision(levels, args.sizes, batch=args.batch, repeats=args.repeats)
    out = Path(args.out)
    measured = table.dropna(subset=["forward_ms"]) if "forward_ms" in table else table
    for row in measured.itertuples():
        console.print(
            f"{row.tower:<10}{row.side:>5} px {row.tokens:>6} tokens {row.forward_ms:>9.1f} ms "
            f"{row.activation_mib:>9.1f} MiB",
            highlight=False,
        )
    if "skipped" in table:
        for row in table[table["skipped"].notna()].itertuples():
            console.print(f"{row.tower:<10}{row.side:>5} px skipped: {row.skipped}", highlight=False)
    grow = growth(table)
    for row in grow.itertuples():
        console.print(
            f"{row.tower}: {row.from_px} -> {row.to_px} px costs {row.time_x:.1f}x the time and "
            f"{row.activation_x:.1f}x the activation memory",
            highlight=False,
        )
    io.write_json(
        out / "vision_bench.json",
        {
            "spec": args.spec,
            "batch": args.batch,
            "rows": table.to_dict(orient="records"),
            "growth": grow.to_dict(orient="records"),
        },
    )
    io.write_bytes(out / "vision_bench.png", figure_png(plot(table), dpi=120))
    console.print(f"wrote {out / 'vision_bench.json'} and {out / 'vision_bench.png'}", soft_wrap=True, highlight=False)
    return 0


def cmd_demo(args) -> int:
    from vlmlab.cli.pipeline import analyze_and_report
    from vlmlab.study.runner import run_study

    if args.quick and args.study != "llm":
        raise UserError("--quick is the small version of the LLM-generation study (--study llm)", exit_code=2)
    name = {"llm": "demo-quick" if args.quick else "demo", "vision": "demo-vision", "routing": "demo-routing"}[
        args.study
    ]
    out = Path(args.out or f"runs/{name}")
    # train and evaluate every variant, combine the records
    study = run_study(resolve_study_path(name), out, jobs=args.jobs, prepare_process=load_builtin_parts)
    _, html_path = analyze_and_report(out)  # measure what the analyses need, compute them, render
    _print_study_summary(out)
    analyses = ", ".join(a.id for a in study.spec.analyses)
    console.print(
        f"\n[bold]Open {html_path}[/bold] for the figures: accuracy per task and category with 95% CIs, "
        f"the control check, training curves, costs and the analyses ({analyses}).",
        soft_wrap=True,
    )
    console.print(
        f"Per-item records: {study.dir.results} (one row per item, variant, seed and evaluation mode).", soft_wrap=True
    )
    return 0


def _print_study_summary(path: Path) -> None:
    import pandas as pd
    from rich.table import Table

    from vlmlab.study.layout import StudyDir

    summary = pd.read_csv(StudyDir(path).summary)
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
    console.print(
        f"wrote {counts['scenes']} scenes (train/val/test {counts['train_scenes']}/{counts['val_scenes']}/"
        f"{counts['test_scenes']}) and {questions} questions to {args.out} in {seconds:.1f}s",
        soft_wrap=True,
    )
    return 0


def cmd_data_check(args) -> int:
    from pydantic import ValidationError

    from vlmlab.config import DataSource
    from vlmlab.data.check import check_dataset
    from vlmlab.errors import validation_error

    task, _, split = args.task.partition(":")
    try:
        source = DataSource(task=task, split=split or "test", limit=args.limit, path=args.path)
    except ValidationError as exc:
        raise validation_error(exc, prefix="data") from None
    report = check_dataset(source)
    text_only = f" (and {report['text_only']} text-only records, their text checked)" if report["text_only"] else ""
    console.print(
        f"{args.task}: {report['items']} items over {report['images']} images, all readable{text_only}; "
        f"categories {report['categories']}; answers {report['answer_types']}; "
        f"image sizes {report['image_sizes']}",
        soft_wrap=True,
        highlight=False,
    )
    return 0


def cmd_data_convert_refs(args) -> int:
    from vlmlab import io
    from vlmlab.data.tasks.refcoco import load_pickle

    refs = load_pickle(Path(args.pickle))
    if not isinstance(refs, list):
        raise UserError(f"{args.pickle}: expected a list of refs", exit_code=1)
    io.write_json(args.out, refs)
    console.print(f"wrote {len(refs)} refs to {args.out}", soft_wrap=True, highlight=False)
    return 0


def cmd_verify(args) -> int:
    from vlmlab.checkpoint import NO_MANIFEST
    from vlmlab.integrity import verify_run

    check = verify_run(args.run_dir, write=args.write_manifest)
    if check.problems:  # one line: the first problem, how many more, and what to do
        directory, problem = check.problems[0]
        more = f" (and {len(check.problems) - 1} more)" if len(check.problems) > 1 else ""
        hint = (
            f"; if you trust it, run `vlmlab verify {args.run_dir} --write-manifest`"
            if problem == NO_MANIFEST
            else "; restore it, or train again"
        )
        raise UserError(f"{directory}: {problem}{more}{hint}")
    for directory in check.written:
        console.print(
            f"{directory}: wrote manifest.json (this run now vouches for its files as they are)", soft_wrap=True
        )
    for directory, _ in check.checked:
        console.print(f"{directory}: ok", soft_wrap=True, highlight=False)
    console.print(
        f"{args.run_dir}: verified; digest {check.digest} (compare it with the digest the run's author publishes)",
        soft_wrap=True,
        highlight=False,
    )
    return 0


def _summary(cls) -> str:
    """The first line of a class's docstring ("" if none), escaped so `[x1, ...]` is not read as rich markup."""
    lines = (cls.__doc__ or "").strip().splitlines()
    return escape(lines[0]) if lines else ""


def _print_mapping(scored: dict) -> None:
    """What a harness's rows became: mapped, not mapped (the first few named, with why), items left unanswered."""
    report = scored.get("harness")
    if not report:
        return
    line = f"{scored['format']}: {report['rows']} rows, {report['mapped']} mapped to items"
    if report["unmapped"]:
        line += f", {report['unmapped']} not mapped and not scored ({'; '.join(report['unmapped_first'])}"
        line += ", ...)" if report["unmapped"] > len(report["unmapped_first"]) else ")"
    line += f"; {report['items_without_answer']} items of the task have no answer"
    console.print(escape(line), highlight=False, soft_wrap=True)


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
    for task, entry in metrics.get("tasks", {}).items():
        console.print(f"{task}: {entry['metric']} — {entry['rule']}", highlight=False, soft_wrap=True)
        for key, value in entry.get("loader", {}).items():
            console.print(f"{task}: {key.replace('_', ' ')}: {value}", highlight=False)
        for category, summary in entry.get("summary_per_category", {}).items():
            console.print(
                f"{task}/{category}: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()), highlight=False
            )
