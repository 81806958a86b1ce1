"""`vlmlab report STUDY_DIR`: the question, the control check, results with uncertainty, curves, costs, analyses.

Everything here is rendering of files earlier steps wrote: nothing is computed that an analysis owns."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vlmlab.analysis.run import probes_runs, saved_results
from vlmlab.config import flatten
from vlmlab.render import plots
from vlmlab.render.document import Report, Section, Text
from vlmlab.study.data import StudyData, load_study_data, results_fingerprint, run_json
from vlmlab.study.results import SUMMARY_COLUMNS


def design_section(study: StudyData) -> Section:
    spec = study.spec
    s = Section("Design")
    external_only = {lv for levels in study.external.values() for lv in levels.values()}
    if study.trained_variants:
        s.text(
            f"Factors varied: {', '.join(f'**{n}** ({len(f.levels)} levels)' for n, f in spec.factors.items())}; "
            f"seeds {', '.join(map(str, spec.seeds))}; every trained variant is trained with the same recipe and "
            "evaluated on the same items."
        )
        trained = (study.trained_spec or spec).factors
        rows = [
            {
                "factor": n,
                "level": level,
                "overrides": ", ".join(f"{k} = {json.dumps(v)}" for k, v in o.items())
                if level in trained.get(n, f).levels
                else "external answers (no config)",
            }
            for n, f in spec.factors.items()
            for level, o in f.levels.items()
            if level in trained.get(n, f).levels or level in external_only
        ]
        s.table(pd.DataFrame(rows), "Each level sets exactly the keys its factor declares.")
    else:
        s.text(
            f"{len(study.external)} sets of answers produced elsewhere, compared on the items they all answer "
            "(no variant is trained here): each is a level of one factor, `model`."
        )
    if study.external:
        _external_table(s, study)
    tasks = (
        study.results[study.results["mode"] == "clean"]
        .groupby("task", sort=False)
        .agg(items=("item_id", "nunique"), categories=("category", lambda c: ", ".join(sorted(set(c)))))
    )
    s.table(tasks.reset_index(), "Evaluation tasks (items per seed).")
    return s


def _external_table(s: Section, study: StudyData) -> None:
    """The external variants: what they are, their levels, where their answers come from, how many rows mapped."""
    info = study.control.get("external", {})
    rows = []
    for name, levels in study.external.items():
        scored = run_json(study.dir.external(name).metrics()).get("scored", [])
        mapped = [
            f"{x['task']}: {x['harness']['mapped']} of {x['harness']['rows']} rows"
            + (f" ({x['harness']['unmapped']} not mapped)" if x["harness"]["unmapped"] else "")
            for x in scored
            if isinstance(x, dict) and x.get("harness")
        ]
        rows.append(
            {
                "variant": name,
                "about": info.get(name, {}).get("about", ""),
                "levels": ", ".join(f"{k}={v}" for k, v in levels.items()),
                "answers": ", ".join(
                    f"{Path(f).name} ({h[:12]})" for f, h in info.get(name, {}).get("files", {}).items()
                ),
                "format": ", ".join(info.get(name, {}).get("formats", [])),
                "rows mapped": "; ".join(mapped) or "all (by item id)",
            }
        )
    s.text(
        "**External variants**: answers produced elsewhere, scored here with the tasks' own rules (the same as "
        "every trained variant's) and analysed like any variant; one set of answers is paired with every seed. "
        "Files are named with the start of their sha256."
    )
    s.table(pd.DataFrame(rows))


def _provenance(s: Section, prov: dict) -> None:
    """Runs resumed with a changed recipe, and training items skipped for bad images (flagged: both change
    what a variant trained on beyond its config)."""
    runs = prov.get("runs", {})
    changed = [
        {"run": name, "resumed from": ch.get("resumed_from") or "start", "changes": _changes(ch.get("changes", {}))}
        for name, r in runs.items()
        for ch in r.get("recipe_changes", [])
    ]
    if changed:
        s.text(
            "**Flagged: resumed with a changed recipe.** These runs were continued after a stop with different "
            "learning rates, warmup, non-finite or bad-image policy; their steps before the change used the old "
            "values, so they did not follow one recipe throughout."
        )
        s.table(pd.DataFrame(changed))
    skipped = {name: r.get("bad_images", {}) for name, r in runs.items() if r.get("bad_images")}
    if skipped:
        verdict = (
            "every variant of a seed skipped the same items, so they still trained on the same data"
            if prov.get("skips_match", True)
            else "**the variants skipped different items, so they did not train on the same data: the control "
            "check fails for the data**"
        )
        s.text(f"Training items skipped for unreadable images (`data.on_bad_image: skip`): {verdict}.")
        rows = [
            {"run": name, "items skipped": len(items), "images": ", ".join(sorted(set(items.values()))[:5])}
            for name, items in skipped.items()
        ]
        s.table(pd.DataFrame(rows))


def _changes(changes: dict) -> str:
    return "; ".join(f"{k}: {json.dumps(old)} → {json.dumps(new)}" for k, (old, new) in changes.items())


def control_section(study: StudyData) -> Section:
    c = study.control
    s = Section("Control check")
    status = "passed" if c.get("passed") and study.provenance.get("skips_match", True) else "failed"
    cfg = c.get("config", {})
    if study.external:
        names = ", ".join(f"`{n}`" for n in study.external)
        s.text(
            f"**Not verified for the external variants** ({names}): their answers come from files, so this check "
            "cannot see their recipe, training data, data order, parts or environment — a difference between them "
            "and another variant may come from any of these. What holds: they are scored with the same rules on the "
            "same items (every paired comparison uses only the items both answered)."
        )
    if not cfg:
        s.text("No variant was trained in this study: there is no config to compare.")
        return s
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
    _provenance(s, study.provenance)
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
        + (
            " An external variant has one set of answers: its `seeds` is 1 and it has no spread over seeds."
            if study.external
            else ""
        )
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
    extra = [c for c in summ.columns if c not in SUMMARY_COLUMNS]
    if extra:
        bench = summ.dropna(subset=extra, how="all")
        s.table(
            bench[["variant", "mode", "task", "category", "accuracy", *extra]].reset_index(drop=True),
            "Benchmark metrics beyond accuracy, per category (e.g. POPE's precision, recall and F1 of `yes` and "
            "its yes ratio, per sampling variant), averaged over seeds.",
        )
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


def training_section(study: StudyData) -> Section | None:
    if not study.trained_variants:
        return None
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


LEADING = ("claims",)  # analyses whose sections open the report, before the design (what the seeds claim)


def analysis_sections(study: StudyData) -> list[Section]:
    """Each analysis's saved result, rendered; one that is missing or stale is a section that says how to compute it.
    The leading analyses (the claims) come first."""
    sections = []
    ordered = sorted(saved_results(study), key=lambda saved: saved.planned.spec.id not in LEADING)
    for saved in ordered:
        p = saved.planned
        if saved.result is not None and saved.current:
            section = p.analysis.render(saved.result)
            if study.external and probes_runs(p.analysis):
                names = ", ".join(f"`{n}`" for n in study.external)
                note = (
                    f"The external variants ({names}) are not in this section: it rests on trained runs (their "
                    "weights, configs and the control check), which an external variant does not have."
                )
                section.blocks.insert(0, Text(note))
        else:
            state = "not computed yet" if saved.result is None else "computed from older results or other settings"
            section = Section(p.analysis.title or p.name)
            section.text(f"`{p.name}`: {state}. Run `vlmlab analyze {study.path}` to compute it.")
        section.anchor = p.name
        sections.append(section)
    return sections


def build_report(path: str | Path) -> tuple[Path, Path]:
    """Write report.html (self-contained) and report.md (+ figures/) into the study directory.

    Renders only: the study's records and summary, and the analyses' saved results (`vlmlab analyze`). It runs
    no model and computes no analysis, so rendering twice gives the same files."""
    study = load_study_data(path)
    spec = study.spec
    question = spec.question or "Which variant is better, and why?"
    report = Report(f"vlmlab study: {spec.name}", f"{question} — results `{results_fingerprint(study.dir)}`")
    analyses = analysis_sections(study)
    leading = sum(section.anchor in LEADING for section in analyses)  # anchors are the saved names
    for section in analyses[:leading]:
        report.add(section)
    for build in (design_section, control_section, results_section, category_section, training_section):
        section = build(study)
        if section is not None:
            report.add(section)
    for section in analyses[leading:]:
        report.add(section)
    report.write(study.dir.report_html, study.dir.report_md)
    return study.dir.report_html, study.dir.report_md
