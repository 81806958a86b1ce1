"""`vlmlab study --check` on a large design: how long resolving the variants and the control check take.

Writes a study spec of `--levels-a` x `--levels-b` variants x `--seeds` seeds over a demo-quick-like base (the
easy-VQA training set, `--items` items, an align and a finetune stage), then times `vlmlab.study.runner.
prepare_study` (what `--check` runs) once. Run it against another checkout to compare:
`PYTHONPATH=/path/to/other/src python benchmarks/bench_study_check.py`.

Usage: python benchmarks/bench_study_check.py [--levels-a 30] [--levels-b 20] [--seeds 3] [--items 4000]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import yaml


def spec(levels_a: int, levels_b: int, seeds: int, items: int) -> dict:
    base = {
        "name": "big",
        "model": {
            "vision": {"id": "vit", "patch_size": 8, "hidden_size": 64, "num_layers": 2, "num_heads": 4},
            "llm": {"id": "llama2-tiny", "hidden_size": 64, "num_layers": 2, "num_heads": 4, "init": "random"},
        },
        "data": {
            "train": {"task": "easy-vqa", "split": "train", "limit": items},
            "eval": [{"task": "easy-vqa", "split": "test", "limit": 300}],
            "image": {"size": 64},
        },
        "train": {
            "batch_size": 32,
            "stages": [
                {"name": "align", "epochs": 0.1, "lr": {"projector": 1e-3}},
                {"name": "finetune", "epochs": 1, "lr": {"projector": 2e-3, "llm": 2e-3}},
            ],
        },
    }
    lr = {f"l{i}": {"train.stages.1.lr.llm": 1e-4 * (i + 1)} for i in range(levels_a)}
    wd = {f"w{i}": {"train.weight_decay": 0.01 * i} for i in range(levels_b)}
    return {
        "name": "big",
        "question": "how do the learning rate and weight decay interact?",
        "base": base,
        "factors": {
            "lr": {"keys": ["train.stages.1.lr.llm"], "levels": lr},
            "wd": {"keys": ["train.weight_decay"], "levels": wd},
        },
        "seeds": list(range(seeds)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels-a", type=int, default=30)
    parser.add_argument("--levels-b", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--items", type=int, default=4000)
    args = parser.parse_args()
    os.environ.setdefault("VLMLAB_NO_PROGRESS", "1")
    from vlmlab.parts import load_builtin_parts
    from vlmlab.study.runner import prepare_study

    load_builtin_parts()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.yaml"
        path.write_text(yaml.safe_dump(spec(args.levels_a, args.levels_b, args.seeds, args.items)))
        t0 = time.perf_counter()
        study = prepare_study(path, Path(tmp) / "out")
        seconds = time.perf_counter() - t0
    runs = len(study.variants)
    print(
        f"prepare_study (study --check): {args.levels_a * args.levels_b} variants x {args.seeds} seeds = {runs} runs, "
        f"{args.items} training items: {seconds:.1f} s ({1000 * seconds / runs:.1f} ms per run) on "
        f"{platform.machine()} x {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
