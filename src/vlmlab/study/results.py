"""Combine a study's per-item records into results.parquet and summarize them per variant with uncertainty."""

from __future__ import annotations

import numpy as np
import pandas as pd

from vlmlab import io
from vlmlab.data.eval_mode import BLIND, CLEAN, EvalMode
from vlmlab.metrics import parse_box
from vlmlab.registry import TASKS
from vlmlab.study.external import external_records
from vlmlab.study.layout import Study
from vlmlab.study.spec import variant_inputs

BOOTSTRAP_SAMPLES = 1000
SUMMARY_COLUMNS = [
    "variant",
    "mode",
    "task",
    "category",
    "accuracy",
    "seed_std",
    "ci_low",
    "ci_high",
    "seeds",
    "n",
    "format_error_rate",
]


def modes(spec) -> list[EvalMode]:
    """Every evaluation mode the spec asks for: clean, then blind, then each perturbation."""
    return [CLEAN, *([BLIND] if spec.eval.blind else []), *(EvalMode.parse(p) for p in spec.eval.perturb)]


def combine(study: Study) -> pd.DataFrame:
    """Every variant's records of every mode, with variant, seed, mode and one column per factor; then each
    external variant's (clean mode)."""
    frames = []
    for v in study.variants:
        run = study.run_dir(v)
        for mode in modes(study.spec):
            frame = io.read_parquet(run.predictions(mode), "predictions")
            frame.insert(0, "mode", mode.name)
            frame.insert(0, "seed", v.seed)
            for factor in reversed(list(study.spec.factors)):
                frame.insert(0, factor, v.levels[factor])
            frame.insert(0, "variant", v.name)
            frames.append(frame)
    for ext in study.external:  # clean records only, once per seed (one set of answers pairs with each seed's)
        frames.append(external_records(study.dir.path, ext.name, ext.levels, study.spec.seeds))
    results = pd.concat(frames, ignore_index=True)
    results["format_error"] = _format_errors(results)
    return results


def _format_errors(results: pd.DataFrame) -> pd.Series:
    """True where the gold answer is a box but the prediction holds none (the structured-output failure)."""
    gold_is_box = results["answer"].map(lambda a: parse_box(a) is not None)
    pred_has_box = results["prediction"].map(lambda p: parse_box(p) is not None)
    return gold_is_box & ~pred_has_box


def _bootstrap_ci(per_seed_scores: list[np.ndarray], rng: np.random.Generator) -> tuple[float, float]:
    """95% percentile interval of the seed-averaged accuracy, resampling items within each seed."""
    means = np.zeros(BOOTSTRAP_SAMPLES)
    for scores in per_seed_scores:
        idx = rng.integers(0, len(scores), size=(BOOTSTRAP_SAMPLES, len(scores)))
        means += scores[idx].mean(axis=1)
    means /= len(per_seed_scores)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def benchmark_metrics(frame: pd.DataFrame, task) -> dict[str, float]:
    """The task's own summary metrics beyond accuracy (POPE: precision, recall, F1, yes ratio), per seed, averaged."""
    if task is None:
        return {}
    per_seed = [task.summary(list(f["prediction"]), list(f["answer"])) for _, f in frame.groupby("seed", sort=True)]
    if not per_seed or not per_seed[0]:
        return {}
    return {key: float(np.mean([s[key] for s in per_seed])) for key in per_seed[0]}


def summarize(results: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per (variant, mode, task, category) and per (variant, mode, task) with category `all`:
    accuracy averaged over seeds, its spread over seeds, a bootstrap 95% CI, items per seed, format errors,
    and the benchmark's own metrics where it has them (POPE: precision, recall, f1, yes_ratio), after them."""
    rng = np.random.default_rng(seed)
    rows = []
    tasks = {t: TASKS.get(t)() for t in results["task"].unique() if t in TASKS.ids()}
    results = results.assign(gold_box=results["answer"].map(lambda a: parse_box(a) is not None))
    with_all = pd.concat([results, results.assign(category="all")], ignore_index=True)
    for (variant, mode, task, category), frame in with_all.groupby(["variant", "mode", "task", "category"], sort=False):
        per_seed = [f["score"].to_numpy(dtype=float) for _, f in frame.groupby("seed", sort=True)]
        accs = [s.mean() for s in per_seed]  # metrics.accuracy per seed: the mean score (as arrays, for the bootstrap)
        low, high = _bootstrap_ci(per_seed, rng)
        boxes = frame["gold_box"]
        rows.append(
            {
                "variant": variant,
                "mode": mode,
                "task": task,
                "category": category,
                "accuracy": float(np.mean(accs)),
                "seed_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else float("nan"),
                "ci_low": low,
                "ci_high": high,
                "seeds": len(per_seed),
                "n": int(round(np.mean([len(s) for s in per_seed]))),
                "format_error_rate": float(frame.loc[boxes, "format_error"].mean()) if boxes.any() else float("nan"),
                **benchmark_metrics(frame, tasks.get(task)),
            }
        )
    extra = [c for c in dict.fromkeys(k for row in rows for k in row) if c not in SUMMARY_COLUMNS]
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS + extra)


def run_provenance(study: Study) -> dict:
    """What happened to each variant's run beyond its config, for the control check: recipe changes made on
    resume (after a non-finite or bad-image stop) and the training items skipped for bad images. Variants of a
    seed that skipped different items did not train on the same data: `skips_match` is then false."""
    runs = {}
    for v in study.variants:
        run = study.run_dir(v)
        env = io.read_record(run.environment) if run.environment.is_file() else {}
        info = io.read_record(run.train_info) if run.train_info.is_file() else {}
        runs[v.run_name] = {
            "recipe_changes": env.get("recipe_changes", []),
            "bad_images": (info.get("bad_images") or {}).get("skipped", {}),
        }
    by_seed: dict[int, set] = {}
    for v in study.variants:
        by_seed.setdefault(v.seed, set()).add(tuple(sorted(runs[v.run_name]["bad_images"])))
    return {"runs": runs, "skips_match": all(len(skips) == 1 for skips in by_seed.values())}


def write_results(study: Study) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write provenance.json, results.parquet and summary.csv (each atomically), then `complete.json` naming the
    files' hashes and the variants' inputs: readers trust them only through it (a crash between the writes leaves no
    marker)."""
    results = combine(study)
    names = [e.name for e in study.external]  # summarized over one copy of their answers: no spread over seeds
    once = ~results["variant"].isin(names) | (results["seed"] == study.spec.seeds[0])
    summary = summarize(results[once])
    study.dir.complete.unlink(missing_ok=True)
    io.write_json(study.dir.provenance, run_provenance(study))  # its own record: control.json is the prepare step's
    io.write_parquet(study.dir.results, results)
    with io.atomic_path(study.dir.summary) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.6g")
    io.write_json(
        study.dir.complete,
        {
            "variants": {v.run_name: variant_inputs(v, study.spec) for v in study.variants}
            | {f"external/{e.name}": e.inputs() for e in study.external},
            "files": {p.name: io.file_sha256(p) for p in (study.dir.results, study.dir.summary, study.dir.provenance)},
        },
    )
    return results, summary
