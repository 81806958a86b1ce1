"""Representation-analysis memory: peak RSS of capturing and comparing 2,000 probe items x all LLM layers.

Runs the `representations` analysis (clean + perturbed features for every variant, per-layer and
cross-layer CKA) on a finished study in a fresh process and prints the process's peak resident memory.

Usage: python benchmarks/bench_cka_memory.py STUDY_DIR [--n-probe 2000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("VLMLAB_NO_PROGRESS", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir")
    parser.add_argument("--n-probe", type=int, default=2000)
    args = parser.parse_args()
    study_dir = Path(args.study_dir)
    for cache in study_dir.glob("variants/*/seed-*/measurements/representations-*.safetensors"):
        cache.unlink()  # measure the capture too, not only the comparisons

    from vlmlab.analysis.representations import Representations
    from vlmlab.measure.base import measure_all
    from vlmlab.parts import load_builtin_parts
    from vlmlab.study.data import load_study_data

    load_builtin_parts()

    study = load_study_data(study_dir)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    analysis = Representations(Representations.Params(n_probe=args.n_probe))
    measured = analysis.measurements(study)
    measure_all(measured)
    tables = analysis.compute(study, measured).tables
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    layers = tables["clean_vs_perturbed"]["layer"].max()
    print(
        f"{len(study.variants)} variants x {len(study.seeds)} seeds, {args.n_probe} probe items x {layers} layers: "
        f"{seconds:.0f} s, peak RSS {peak:.0f} MiB (after imports and loading the study: {before:.0f} MiB)"
    )
    print(tables["stability"].to_string(index=False))
    return 0 if peak < 2048 else 1


if __name__ == "__main__":
    sys.exit(main())
