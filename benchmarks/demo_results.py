"""The demo tables and verdicts of benchmarks/RESULTS.md, regenerated from finished study directories (issue 31).

Every figure below comes from the files a study wrote (`summary.csv`, `results.parquet`, `analysis/claims.json`,
each run's `train.json` and `done.json`, `control.json`), so RESULTS cannot drift from a run: paste the output,
and re-run it whenever the demo is re-run. It names the commit the study was trained at (the control check's
environment) and the seeds.

Usage: python benchmarks/demo_results.py runs/demo [runs/demo-vision runs/demo-routing ...] [--wall SECONDS]
  --wall: the measured wall time of the run that produced the first directory, printed with it
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import yaml

from _markdown import md_table


def frame(data: dict) -> pd.DataFrame:
    """A DataFrame saved by `vlmlab.analysis.result` ({columns, dtypes, rows})."""
    return pd.DataFrame(data["rows"], columns=data["columns"])


def accuracy_table(study: Path) -> pd.DataFrame:
    """Clean accuracy per task and variant: mean over seeds ± half-width of the 95% interval (and the seeds' spread)."""
    summary = pd.read_csv(study / "summary.csv")
    clean = summary[(summary["mode"] == "clean") & (summary["category"] == "all")]
    variants = list(dict.fromkeys(clean["variant"]))
    rows = []
    for task, f in clean.groupby("task", sort=False):
        row = {"task (items per seed)": f"{task} ({int(f['n'].iloc[0])})"}  # summary.csv's n is per seed
        for v in variants:
            r = f[f["variant"] == v].iloc[0]
            spread = "" if pd.isna(r["seed_std"]) or r["seeds"] < 2 else f", seed sd {r['seed_std']:.3f}"
            row[v] = f"{r['accuracy']:.3f} ±{(r['ci_high'] - r['ci_low']) / 2:.3f}{spread}"
        rows.append(row)
    return pd.DataFrame(rows)


def per_seed(study: Path, task_part: str) -> pd.DataFrame:
    """Clean accuracy of the tasks whose name contains `task_part`, per variant and seed."""
    results = pd.read_parquet(study / "results.parquet", columns=["variant", "seed", "mode", "task", "score"])
    clean = results[(results["mode"] == "clean") & results["task"].str.contains(task_part)]
    table = clean.groupby(["task", "variant", "seed"], sort=False)["score"].mean().unstack("seed")
    table.columns = [f"seed {c}" for c in table.columns]
    return table.reset_index()


def times(study: Path) -> pd.DataFrame:
    rows = []
    for done_file in sorted(study.glob("variants/*/seed-*/done.json")):
        run = done_file.parent
        done = json.loads(done_file.read_text())
        train = json.loads((run / "train.json").read_text())
        stages = train.get("stage_seconds", {})
        rows.append(
            {
                "run": f"{run.parent.name}/{run.name}",
                "steps": train.get("steps"),
                "stages (s)": ", ".join(f"{k.split(':', 1)[1]} {s:.0f}" for k, s in stages.items() if s >= 0.5),
                "eval per mode (s)": ", ".join(
                    f"{m} {s:.0f}" for m, s in done.get("eval_seconds_per_mode", {}).items()
                ),
                "run total (s)": round(done.get("seconds", float("nan"))),
            }
        )
    return pd.DataFrame(rows)


def claims(study: Path) -> pd.DataFrame | None:
    path = study / "analysis" / "claims.json"
    if not path.is_file():
        return None
    table = frame(json.loads(path.read_text())["result"]["claims"]["frame"])
    return table[["id", "claim", "verdict", "evidence"]]


def describe(study: Path, wall: float | None) -> str:
    control = json.loads((study / "control.json").read_text())
    env = control.get("environment", {})
    spec = yaml.safe_load((study / "study.yaml").read_text())
    out = [
        f"### `{study}`: {spec['name']}",
        "",
        f"Trained at commit `{env.get('git_sha', '?')}` on {env.get('cpu_count', '?')} CPUs "
        f"({env.get('torch_threads', '?')} torch threads), {env.get('platform', '?')}; seeds "
        f"{', '.join(map(str, control.get('seeds', [])))}; variants {', '.join(control.get('variants', []))}. "
        f"Regenerated with `python benchmarks/demo_results.py {study}`.",
    ]
    if wall is not None:
        out.append(f"Wall time of the run: **{int(wall // 60)} min {round(wall % 60)} s**.")
    out += ["", "Clean accuracy (mean over seeds ± half-width of the 95% bootstrap interval over questions):", ""]
    out += [md_table(accuracy_table(study)), ""]
    ground = per_seed(study, "ground")
    if len(ground):
        out += ["Grounding Acc@0.5 per seed:", "", md_table(ground), ""]
    out += ["Time per run (train.json, done.json):", "", md_table(times(study), 1), ""]
    verdicts = claims(study)
    if verdicts is not None:
        out += ["The claims section (`analysis/claims.json`):", "", md_table(verdicts), ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", type=Path)
    ap.add_argument("--wall", type=float, help="wall-clock seconds of the run of the first study")
    args = ap.parse_args()
    for i, study in enumerate(args.studies):
        if not (study / "complete.json").is_file():
            sys.exit(f"{study}: not a finished study (complete.json missing)")
        print(describe(study, args.wall if i == 0 else None))


if __name__ == "__main__":
    main()
