"""`vlmlab report STUDY_DIR`: the question, the control check, results with uncertainty, curves, costs, analyses."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import pandas as pd

from vlmlab.report import plots
from vlmlab.report.document import Report, Section
from vlmlab.study.control import flatten
from vlmlab.study.data import StudyData, load_study_data
from vlmlab.study.spec import AnalysisSpec, build_analysis

DEFAULT_ANALYSES = ("visual-reliance",)


def design_section(study: StudyData) -> Section:
    spec = study.spec
    s = Section("Design")
    s.text(
        f"Factors varied: {', '.join(f'**{n}** ({len(f.levels)} levels)' for n, f in spec.factors.items())}; "
        f"seeds {', '.join(map(str, spec.seeds))}; every variant is trained with the same recipe and evaluated "
        f"on the same items."
    )
    rows = [
        {"factor": n, "level": level, "overrides": ", ".join(f"{k} = {json.dumps(v)}" for k, v in o.items())}
        for n, f in spec.factors.items()
        for level, o in f.levels.items()
    ]
    s.table(pd.DataFrame(rows), "Each level sets exactly the keys its factor declares.")
    tasks = (
        study.results[study.results["mode"] == "clean"]
        .groupby("task", sort=False)
        .agg(items=("item_id", "nunique"), categories=("category", lambda c: ", ".join(sorted(set(c)))))
    )
    s.table(tasks.reset_index(), "Evaluation tasks (items per seed).")
    return s


def control_section(study: StudyData) -> Section:
    c = study.control
    s = Section("Control check")
    status = "passed" if c.get("passed") else "failed"
    cfg = c.get("config", {})
    s.text(
        f"**{status}**: all variants resolve to configs that are identical outside the declared keys "
        f"({', '.join(f'`{k}`' for k in cfg.get('declared', []))}); {cfg.get('held_constant_keys', '?')} resolved "
        f"keys held constant, fingerprint `{cfg.get('fingerprint', '?')}`."
    )
    varied = cfg.get("varied", {})
    if varied:
        s.table(
            pd.DataFrame(
                [{"variant": v, **{k: json.dumps(val) for k, val in vals.items()}} for v, vals in varied.items()]
            ),
            "The resolved values of the declared keys per variant.",
        )
    with_parts = {v: flatten(vals) for v, vals in cfg.get("varied_with_parts", {}).items() if vals}
    if with_parts:
        keys = [
            k
            for k in dict.fromkeys(k for vals in with_parts.values() for k in vals)
            if len({json.dumps(vals.get(k)) for vals in with_parts.values()}) > 1
        ]
        if keys:
            s.table(
                pd.DataFrame(
                    [
                        {"variant": v, **{k.removeprefix("model."): json.dumps(vals.get(k)) for k in keys}}
                        for v, vals in with_parts.items()
                    ]
                ),
                "What the varied parts are made of (their identity fields, varied with the declared keys; "
                "only the fields that differ).",
            )
    order = c.get("data_order", {})
    if order:
        verdict = (
            "identical for every variant of a seed"
            if order.get("identical")
            else f"different where expected ({'; '.join(order.get('expected_differences', []))})"
        )
        s.text(f"Training data order (hash of the item ids in the first 8 batches of each stage): {verdict}.")
        rows = [
            {"seed": seed, "variant": v, "stage hashes": " ".join(h)}
            for seed, by in order.get("per_seed", {}).items()
            for v, h in by.items()
        ]
        s.table(pd.DataFrame(rows))
    env = c.get("environment", {})
    if env:
        pk = env.get("packages", {})
        s.text(
            f"Environment: Python {env.get('python')}, {env.get('platform')}, {env.get('cpu_count')} CPUs"
            f"{', GPU ' + env['gpu'] if env.get('gpu') else ', no GPU'}; git `{env.get('git_sha')}`; "
            + ", ".join(f"{k} {v}" for k, v in pk.items() if v)
        )
        _run_environments(s, env, study.run_environments())
    return s


def _run_environments(s: Section, study_env: dict, runs: dict[str, list[dict]]) -> None:
    """Say whether every run trained where the study was checked; list each field that differs otherwise."""
    if not runs:
        return
    rows = []
    for run, envs in runs.items():
        for i, env in enumerate(envs):
            for key in sorted(set(env) | set(study_env)):
                a, b = env.get(key), study_env.get(key)
                if isinstance(a, dict) or isinstance(b, dict):
                    rows += [
                        {
                            "run": run,
                            "session": "trained" if i == 0 else f"resumed {i}",
                            "field": f"{key}.{k}",
                            "run value": str((a or {}).get(k)),
                            "study value": str((b or {}).get(k)),
                        }
                        for k in sorted(set(a or {}) | set(b or {}))
                        if (a or {}).get(k) != (b or {}).get(k)
                    ]
                elif a != b:
                    rows.append(
                        {
                            "run": run,
                            "session": "trained" if i == 0 else f"resumed {i}",
                            "field": key,
                            "run value": str(a),
                            "study value": str(b),
                        }
                    )
    if not rows:
        s.text(f"All {len(runs)} runs were trained in this environment (each run's environment.json).")
    else:
        s.table(
            pd.DataFrame(rows),
            "Runs trained (or resumed) in another environment than the one above: the "
            "fields that differ, from each run's environment.json.",
        )


def results_section(study: StudyData) -> Section:
    s = Section("Results")
    summ = study.summary
    clean_all = summ[(summ["mode"] == "clean") & (summ["category"] == "all")]
    s.text(
        "Accuracy is the task's metric averaged over items, then over seeds. The 95% interval resamples items "
        "(bootstrap, within each seed); `seed_std` is the spread over seeds (blank with one seed). Grounding "
        "answers also report the format-error rate: the share of outputs with no parsable box."
    )
    s.figure(
        plots.grouped_bars(
            clean_all, "task", "accuracy", "ci_low", "ci_high", ylabel="accuracy", variants=study.variants
        ),
        "Accuracy per task and variant (95% bootstrap CI).",
        "accuracy_by_task",
    )
    cols = ["variant", "mode", "task", "accuracy", "ci_low", "ci_high", "seed_std", "seeds", "n", "format_error_rate"]
    table = summ[summ["category"] == "all"][cols]
    if table["format_error_rate"].isna().all():
        table = table.drop(columns="format_error_rate")
    s.table(table.reset_index(drop=True), "Per task and evaluation mode.")
    return s


def category_section(study: StudyData) -> Section:
    s = Section("Per category")
    summ = study.summary
    cats = summ[(summ["mode"] == "clean") & (summ["category"] != "all")]
    s.text("Each task's question families: where a variant's advantage sits (e.g. reasoning vs perception).")
    s.figure(
        plots.per_category(cats, study.variants), "Accuracy per category (95% bootstrap CI).", "accuracy_by_category"
    )
    wide = cats.pivot_table(index=["task", "category"], columns="variant", values="accuracy", sort=False)[
        study.variants
    ]
    s.table(wide.reset_index(), "Clean accuracy per category.")
    return s


def training_section(study: StudyData) -> Section:
    s = Section("Training")
    logs = {f"{v}@{seed}": study.train_log(v, seed) for v in study.variants for seed in study.seeds}
    s.figure(
        plots.training_curves(logs, study.variants), "Training loss (log scale) over all stages.", "training_curves"
    )
    info = study.training_info()
    s.figure(
        plots.cost_bars(info, study.variants),
        "Training time (grey: vision pretraining, paid once by the first "
        "variant when variants share the tower) and trainable parameters per variant.",
        "cost",
    )
    s.table(
        info,
        "From each run's train.json and done.json. `vision_pretrain: cached` = the tower's pretraining "
        "was computed once and shared by variants with the same vision recipe. `llm_bits_per_byte`: the "
        "LLM rung's held-out bits per byte after its LM pretraining (lower = better LM; empty for "
        "randomly initialised or external backbones).",
    )
    return s


def analysis_specs(study: StudyData, only: list[str] | None = None) -> list[AnalysisSpec]:
    """The study's analyses (its spec's list, else the defaults); `only` picks ids, adding registered ones not listed."""
    specs = study.spec.analyses or [AnalysisSpec(id=a) for a in DEFAULT_ANALYSES]
    if only is None:
        return specs
    by_id = {s.id: s for s in specs}
    return [by_id.get(a, AnalysisSpec(id=a)) for a in only]


def analysis_sections(study: StudyData, specs: list[AnalysisSpec]) -> list[Section]:
    """Run each analysis; its numbers (`analysis/<id>.json`) and figures (`analysis/<id>/*.png`) are written too."""
    sections = []
    for i, a in enumerate(specs):
        section = build_analysis(a, f"analyses.{i}").run(study)
        write_analysis_outputs(study.path / "analysis", a, section)
        sections.append(section)
    return sections


def write_analysis_outputs(directory: Path, spec: AnalysisSpec, section: Section) -> Path:
    """One JSON per analysis: its texts, every table as rows (full precision) and the figure files beside it."""
    from vlmlab.io import write_bytes, write_json
    from vlmlab.report.document import Figure, Table, Text

    figures = []
    for block in section.blocks:
        if isinstance(block, Figure):
            target = directory / spec.id / f"{block.name}.png"
            write_bytes(target, block.png)
            figures.append({"file": str(target.relative_to(directory)), "caption": block.caption})
    record = {
        "id": spec.id,
        "params": spec.model_extra or {},
        "title": section.title,
        "texts": [b.text for b in section.blocks if isinstance(b, Text)],
        "tables": [
            {
                "caption": b.caption,
                "columns": list(map(str, b.frame.columns)),
                "rows": json.loads(b.frame.to_json(orient="records")),
            }
            for b in section.blocks
            if isinstance(b, Table)
        ],
        "figures": figures,
    }
    target = directory / f"{spec.id}.json"
    write_json(target, record)
    return target


def build_report(path: str | Path, only: list[str] | None = None) -> tuple[Path, Path]:
    """Write report.html (self-contained) and report.md (+ figures/) into the study directory.

    `only` (from `vlmlab analyze --only`) chooses the analyses; by default the spec's are run.
    """
    study = load_study_data(path)
    spec = study.spec
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    report = Report(
        f"vlmlab study: {spec.name}", f"{spec.question or 'Which variant is better, and why?'} — generated {stamp}"
    )
    for build in (design_section, control_section, results_section, category_section, training_section):
        report.add(build(study))
    for section in analysis_sections(study, analysis_specs(study, only)):
        report.add(section)
    html_path, md_path = study.path / "report.html", study.path / "report.md"
    report.write(html_path, md_path)
    return html_path, md_path
