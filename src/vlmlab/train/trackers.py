"""Experiment trackers (TensorBoard, MLflow) through accelerate, beside the JSONL log every run keeps."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from vlmlab import io
from vlmlab.errors import ConfigError
from vlmlab.run_layout import RunDir

MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # tracker -> the package it needs


def check_installed(trackers: list[str]) -> None:
    """An unavailable tracker is one line naming the key and the extra to install."""
    for name in trackers:
        if importlib.util.find_spec(MODULES[name]) is None:
            raise ConfigError("train.trackers", f"{name} is not installed (pip install 'vlmlab[trackers]')")


def start(accelerator, cfg, run_dir: Path) -> None:
    """Open the trackers: TensorBoard under `RUN/tensorboard/`, MLflow in `$MLFLOW_TRACKING_URI` (e.g. a server or
    `sqlite:///...`), else a file store in `RUN/mlruns`. The resolved config goes in as flat hyper-parameters."""
    import os

    run = RunDir(run_dir)
    for folder in (run.tensorboard, run.mlruns):  # the trackers write there: not through a link out of the run
        io.check_write(folder, replace_link=False)
    init_kwargs: dict[str, Any] = {}
    if "mlflow" in cfg.train.trackers:
        import mlflow

        if not os.environ.get("MLFLOW_TRACKING_URI"):  # a local file store inside the run, no server needed;
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this opt-in
            mlflow.set_tracking_uri(run.mlruns.resolve().as_uri())
        init_kwargs["mlflow"] = {"run_name": run_dir.name}
    accelerator.init_trackers(cfg.name, config=flat_scalars(cfg.resolved()), init_kwargs=init_kwargs)


def flat_scalars(tree: Any, prefix: str = "") -> dict[str, Any]:
    """`a.b.c: value` for every leaf; lists, None and other non-scalars as text (trackers take scalars only)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flat_scalars(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree if isinstance(tree, (bool, int, float, str)) else str(tree)}


def log(accelerator, record: dict[str, Any], step: int) -> None:
    """The numeric fields of a train-log record, as `<stage>/<field>` at the run's global optimizer step."""
    stage = record.get("stage", "train")
    values = {
        f"{stage}/{k}": v
        for k, v in record.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "elapsed_s")
    }
    values.update({f"{stage}/lr/{g}": lr for g, lr in record.get("lr", {}).items()})
    if values:
        accelerator.log(values, step=step)
