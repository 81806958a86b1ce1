"""Train one small config under each shipped launcher config (plain, DDP, FSDP, DeepSpeed ZeRO-2/3) and compare.

Each launcher trains the same config (bf16 autocast, gradient checkpointing, two stages with different
frozen parts, a checkpoint at each stage end) through `accelerate launch --config_file configs/accelerate/X.yaml
--num_processes N -m vlmlab train`, then evaluates. The table gives, per launcher: exit status, time,
the last logged loss, the accuracy, and how many predictions equal the plain single-process run's.
Needs GPUs (FSDP and DeepSpeed do not run on CPU); DeepSpeed rows need `pip install deepspeed`.

Usage: python benchmarks/check_scaleout.py --out /tmp/scaleout [--processes N] [--only fsdp,deepspeed-zero3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCHERS = ["plain", "ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"]
CONFIG = {
    "name": "scaleout-check",
    "seed": 0,
    "model": {
        "vision": {"id": "vit", "family": "clip", "patch_size": 8, "hidden_size": 64, "num_layers": 2, "num_heads": 2},
        "projector": {"id": "gelu-mlp"},
        "llm": {"id": "llama2-tiny", "hidden_size": 64, "num_layers": 2, "num_heads": 4, "init": "random"},
    },
    "data": {
        "train": {"task": "easy-vqa", "split": "train", "limit": 512},
        "eval": [{"task": "easy-vqa", "split": "test", "limit": 128}],
        "image": {"size": 32},
    },
    "train": {
        "batch_size": 16,
        "mixed_precision": "bf16",
        "gradient_checkpointing": True,
        "stages": [
            {"name": "align", "max_steps": 8, "lr": {"projector": 1e-3}},
            {"name": "finetune", "max_steps": 24, "lr": {"projector": 1e-3, "llm": 1e-3, "vision": 1e-4}},
        ],
        "log_every": 4,
    },
    "eval": {"batch_size": 32, "max_new_tokens": 4},
}


def launch(launcher: str, config: Path, out: Path, processes: int) -> list[str]:
    train = ["-m", "vlmlab", "train", str(config), "--out", str(out)]
    if launcher == "plain":
        return [sys.executable, *train]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "configs" / "accelerate" / f"{launcher}.yaml"),
        "--num_processes",
        str(processes),
        *train,
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/check-scaleout")
    ap.add_argument("--processes", type=int, default=None, help="default: the number of visible GPUs")
    ap.add_argument("--only", default=",".join(LAUNCHERS))
    args = ap.parse_args()
    import torch

    processes = args.processes or max(torch.cuda.device_count(), 1)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    config = out / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    rows, plain = [], None
    for launcher in ["plain"] + [x for x in args.only.split(",") if x != "plain"]:
        run = out / launcher
        t0 = time.perf_counter()
        proc = subprocess.run(
            launch(launcher, config, run, processes),
            capture_output=True,
            text=True,
            env={**os.environ, "VLMLAB_NO_PROGRESS": "1"},
        )
        row = {
            "launcher": launcher,
            "processes": 1 if launcher == "plain" else processes,
            "rc": proc.returncode,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        (out / f"{launcher}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode == 0:
            log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
            row["last_loss"] = [r["loss"] for r in log if "loss" in r][-1]
            preds = pd.read_parquet(run / "predictions.parquet")
            row["accuracy"] = float(preds["correct"].mean())
            if launcher == "plain":
                plain = preds
            elif plain is not None:
                row["same_predictions"] = float(
                    (preds["prediction"].to_numpy() == plain["prediction"].to_numpy()).mean()
                )
        else:
            row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
        rows.append(row)
        print(json.dumps(row), flush=True)
    (out / "scaleout.json").write_text(json.dumps({"processes": processes, "rows": rows}, indent=2))
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
