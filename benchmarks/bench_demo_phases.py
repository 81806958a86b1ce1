"""Where a demo's minutes go (issue 31): each phase of `vlmlab demo` timed on a fresh cache, and a training step's parts.

`python benchmarks/bench_demo_phases.py` runs the steps `vlmlab demo` runs, in its order of dependencies, each
timed on its own: the study's datasets and control check; the LM ladder (each rung's pretraining); the vision
towers' pretraining; every variant (its stages, then each evaluation mode); the analyses' measurements; the
analyses; the report. The cache is `--cache` (default: a new empty directory), so the figures are a fresh
machine's. It prints the phase table and writes it to `<out>/phases.json`.

`--steps` then measures, on that study's cached tower and rung, the training throughput of one variant
(`--variant`, its mixture stage cut to `--steps` steps) with the frozen tower's features memoized (cold: the
first variant of a study; warm: every later variant and seed) and without, side by side in one process with the
tries interleaved, and the share of a training step spent in data, the vision tower, the LLM (with the projector,
forward and backward) and the optimizer.

Usage: python benchmarks/bench_demo_phases.py [--study demo] [--out runs/bench-phases] [--cache DIR]
       [--jobs N] [--steps 60 --variant gen2 --tries 3] [--steps-only]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLMLAB_NO_PROGRESS", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from _markdown import md_table  # noqa: E402
from vlmlab.parts import load_builtin_parts  # noqa: E402

load_builtin_parts()

from vlmlab.analysis.run import analysis_specs, analyze_study, plan  # noqa: E402
from vlmlab.cli.commands import resolve_study_path  # noqa: E402
from vlmlab.config import VISION_PRETRAIN, config_from_dict  # noqa: E402
from vlmlab.measure.base import measure_all  # noqa: E402
from vlmlab.measure.towers import pretrain_towers  # noqa: E402
from vlmlab.models.vlm import VisionLanguageModel  # noqa: E402
from vlmlab.progress import progress  # noqa: E402
from vlmlab.registry import LLM_BACKBONES  # noqa: E402
from vlmlab.report.study_report import build_report  # noqa: E402
from vlmlab.study.data import load_study_data  # noqa: E402
from vlmlab.study.runner import prepare_study, run_study  # noqa: E402


class Phases:
    """Named wall-clock intervals, in the order they ran."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    @contextlib.contextmanager
    def __call__(self, phase: str, what: str = ""):
        started = time.perf_counter()
        yield
        self.rows.append({"phase": phase, "what": what, "seconds": time.perf_counter() - started})


def run_phases(spec_path: Path, out: Path, jobs: int) -> list[dict]:
    phases = Phases()
    with phases("datasets", "generate the study's datasets, resolve every variant, control check"):
        study = prepare_study(spec_path, out)
    rungs = {}
    for v in study.variants:
        llm = v.cfg.model.llm
        cls = LLM_BACKBONES.get(llm.id)
        if hasattr(cls, "pretrained_backbone") and getattr(llm.params, "init", None) == "pretrained":
            rungs.setdefault(json.dumps(llm.resolved(), sort_keys=True), (llm.id, cls, llm.params))
    for name, cls, params in rungs.values():
        with phases("LM ladder", name):
            cls.pretrained_backbone(params)
    towered = [
        (v.name, v.seed, v.cfg) for v in study.variants if any(s.kind is VISION_PRETRAIN for s in v.cfg.train.stages)
    ]
    if towered:
        with (
            phases("vision towers", f"{len({v.cfg.model.vision.id for v in study.variants})} tower kind(s)"),
            progress() as bar,
        ):
            rows = pretrain_towers(towered, study.dir.vision_cache, bar)
        for r in rows:
            if not r.get("cached"):
                phases.rows.append(
                    {"phase": "  of which", "what": f"tower {r['variant']} seed {r['seed']}", "seconds": r["seconds"]}
                )
    with phases("variants", f"{len(study.variants)} runs (train + every evaluation mode), jobs={jobs}"):
        if jobs > 1:
            cmd = [sys.executable, "-m", "vlmlab", "study", str(spec_path), "--out", str(out), "--jobs", str(jobs)]
            subprocess.run(cmd, check=True)
        else:
            run_study(spec_path, out)
    for v in study.variants:
        run = study.run_dir(v)
        train = json.loads(run.train_info.read_text())
        done = json.loads(run.done.read_text())
        stages = ", ".join(
            f"{k.split(':', 1)[1]} {s:.0f} s" for k, s in train.get("stage_seconds", {}).items() if s >= 0.5
        )
        evals = ", ".join(f"{m} {s:.0f} s" for m, s in done.get("eval_seconds_per_mode", {}).items())
        phases.rows.append(
            {"phase": "  variant", "what": f"{v.run_name}: {stages}; eval {evals}", "seconds": done["seconds"]}
        )
    data = load_study_data(out)
    planned = plan(data, analysis_specs(data))
    with phases("measurements", ", ".join(p.name for p in planned if p.analysis.measurements(data))):
        measure_all([m for p in planned for m in p.analysis.measurements(data)])
    with phases("analyses", ", ".join(p.name for p in planned)):
        analyze_study(out)
    with phases("report"):
        build_report(out)
    return phases.rows


def _timed_trainer_run(cfg_raw: dict, out: Path, vision_cache: Path) -> dict:
    """One Trainer run with its steps instrumented: seconds per step in data, tower, optimizer (the rest is the LLM
    with the projector, forward and backward)."""
    from vlmlab.train import stages as stage_module
    from vlmlab.train.trainer import Trainer
    from vlmlab.training_step import StepLoop, TrainingStep

    spent = {"data": 0.0, "tower": 0.0, "optimizer": 0.0}
    steps: list[float] = []

    class TimedIter:
        def __init__(self, it):
            self.it = it

        def __iter__(self):
            return self

        def __next__(self):
            t0 = time.perf_counter()
            try:
                return next(self.it)
            finally:
                spent["data"] += time.perf_counter() - t0

    class TimedLoader:
        def __init__(self, loader):
            self.loader = loader

        def __iter__(self):
            return TimedIter(iter(self.loader))

    class TimedLoop(StepLoop):
        def run(self, step_fn):
            def timed(step):
                t0 = time.perf_counter()
                out = step_fn(step)
                steps.append(time.perf_counter() - t0)
                return out

            return super().run(timed)

    def timed_method(owner, name, key):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - t0

        return original, wrapper

    loader_fn = stage_module.batch_loader
    enc, enc_t = timed_method(VisionLanguageModel, "encode_images", "tower")
    upd, upd_t = timed_method(TrainingStep, "update", "optimizer")
    with contextlib.ExitStack() as stack:
        stack.callback(setattr, stage_module, "batch_loader", loader_fn)
        stack.callback(setattr, stage_module, "StepLoop", StepLoop)
        stack.callback(setattr, VisionLanguageModel, "encode_images", enc)
        stack.callback(setattr, TrainingStep, "update", upd)
        stage_module.batch_loader = lambda *a, **k: TimedLoader(loader_fn(*a, **k))
        stage_module.StepLoop = TimedLoop
        VisionLanguageModel.encode_images = enc_t
        TrainingStep.update = upd_t
        cfg = config_from_dict(cfg_raw)
        Trainer(cfg, out, vision_cache=vision_cache).run_training()
    last = cfg.train.stages[-1]
    n = last.max_steps
    return {"step_s": steps[-n:], "spent": spent, "batch": cfg.train.batch_size, "all_steps": len(steps)}


def throughput(study_out: Path, spec_path: Path, variant: str, steps: int, tries: int) -> list[dict]:
    """Samples/s of `variant`'s mixture stage (cut to `steps`) with the memo off, cold and warm, interleaved."""
    from vlmlab.models.vision import features  # (imported here: the phases also run on commits without it)

    study = prepare_study(spec_path, study_out)
    v = next(v for v in study.variants if v.name == variant and v.seed == study.spec.seeds[0])
    raw = v.cfg.resolved()
    raw["train"]["stages"] = [
        raw["train"]["stages"][0],
        {**raw["train"]["stages"][1], "epochs": 1.0, "max_steps": 2},
        {**raw["train"]["stages"][-1], "epochs": 1.0, "max_steps": steps},
    ]
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench-phases-"))
    shared = features.shared
    for t in range(tries):
        memo = features.TowerFeatures(None)  # memory only: cold = nothing memoized yet (the first variant of a
        # study), warm = the same steps again with every image memoized (every later variant and seed)
        for mode in ("off", "cold", "warm"):
            VisionLanguageModel.memoize_tower = mode != "off"
            features.shared = lambda memo=memo: memo
            try:
                r = _timed_trainer_run(raw, work / f"{mode}-{t}", study.dir.vision_cache)
            finally:
                features.shared = shared
            timed = r["step_s"][5:]  # the first steps pay one-off costs
            per_step = sum(timed) / len(timed)
            share = {k: s / r["all_steps"] for k, s in r["spent"].items()}
            rows.append(
                {
                    "try": t,
                    "tower features": mode,
                    "ms/step": 1000 * per_step,
                    "samples/s": r["batch"] / per_step,
                    **{f"{k} ms": 1000 * s for k, s in share.items()},
                }
            )
            print(rows[-1], flush=True)
    VisionLanguageModel.memoize_tower = True
    return rows


def load() -> str:
    """Other processes' CPU use while benchmarking, from the load average (a quiet 2-core machine reads < 1.5)."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="demo", help="built-in study name or spec path (default demo)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-phases"))
    ap.add_argument("--cache", type=Path, help="VLMLAB_CACHE for the run (default: a new empty directory)")
    ap.add_argument("--jobs", type=int, default=1, help="variants trained in parallel processes (vlmlab study --jobs)")
    ap.add_argument("--steps", type=int, default=0, help="then time this many mixture steps per throughput try")
    ap.add_argument("--variant", default="gen2")
    ap.add_argument("--tries", type=int, default=3)
    ap.add_argument("--steps-only", action="store_true", help="skip the phases (the study at --out is trained)")
    args = ap.parse_args()
    cache = args.cache or Path(tempfile.mkdtemp(prefix="vlmlab-fresh-cache-"))
    if not args.steps_only and cache.exists() and any(cache.iterdir()):
        sys.exit(f"--cache {cache}: not empty (the phases are a fresh machine's)")
    os.environ["VLMLAB_CACHE"] = str(cache)
    spec_path = resolve_study_path(args.study)
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    header = (
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads. Date: {datetime.date.today()}. Commit {sha}. Command: "
        f"`python benchmarks/bench_demo_phases.py {' '.join(sys.argv[1:])}`"
    )
    report: dict = {"header": header}
    if not args.steps_only:
        print(f"before: {load()}", flush=True)
        t0 = time.perf_counter()
        rows = run_phases(spec_path, args.out, args.jobs)
        total = time.perf_counter() - t0
        report.update(phases=rows, total_s=total, load_after=load())
        frame = pd.DataFrame(rows)
        frame["share"] = [
            f"{s / total:.0%}" if not p.startswith(" ") else "" for p, s in zip(frame["phase"], frame["seconds"])
        ]
        frame["seconds"] = frame["seconds"].round(1)
        print(
            f"\n{header}\n\n{md_table(frame, 1)}\n\n**total {total / 60:.0f} min {total % 60:.0f} s**; after: {load()}"
        )
    if args.steps:
        rows = throughput(args.out, spec_path, args.variant, args.steps, args.tries)
        frame = pd.DataFrame(rows)
        report["throughput"] = rows
        best = frame.groupby("tower features", sort=False).agg(
            {"ms/step": "min", "samples/s": "max", "data ms": "median", "tower ms": "median", "optimizer ms": "median"}
        )
        best["LLM + projector ms"] = best["ms/step"] - best[["data ms", "tower ms", "optimizer ms"]].sum(axis=1)
        print(
            f"\n{header}\n\n{md_table(frame, 1)}\n\nfastest try per mode:\n\n{md_table(best, 1, index=True)}\n\n{load()}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "phases.json").write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
