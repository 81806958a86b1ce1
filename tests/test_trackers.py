"""`train.trackers`: TensorBoard and MLflow (local file store) get the same losses as train_log.jsonl."""

from __future__ import annotations

import pytest

from vlmlab import io
from vlmlab.config import config_from_dict
from vlmlab.runs import RunDir
from vlmlab.train.trainer import Trainer


def test_tensorboard_and_mlflow_record_the_training_log(tiny_raw, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tiny_raw["train"]["trackers"] = ["tensorboard", "mlflow"]
    run = RunDir(tmp_path / "run")
    Trainer(config_from_dict(tiny_raw), run.path).run_training()
    log = [r for r in io.read_jsonl(run.train_log) if "loss" in r]

    events = EventAccumulator(str(next((run.path / "tensorboard").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    finetune = events.Scalars("finetune/loss")
    assert [e.step for e in finetune] == [3, 4, 5, 6]  # global optimizer steps: align took steps 1-2
    assert [e.value for e in finetune] == pytest.approx([r["loss"] for r in log if r["stage"] == "finetune"], rel=1e-6)

    import mlflow

    mlflow.set_tracking_uri((run.path / "mlruns").resolve().as_uri())
    (mlflow_run,) = mlflow.search_runs(experiment_names=["tiny"], output_format="list")
    history = mlflow.MlflowClient().get_metric_history(mlflow_run.info.run_id, "align/loss")
    assert [m.value for m in history] == pytest.approx([r["loss"] for r in log if r["stage"] == "align"], rel=1e-6)
    assert mlflow_run.data.params["model.llm.id"] == "llama2-tiny"  # the resolved config as parameters


def test_a_tracker_that_is_not_installed_is_one_line(tiny_raw, tmp_path, monkeypatch):
    import importlib.util

    from vlmlab.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    tiny_raw["train"]["trackers"] = ["mlflow"]
    with pytest.raises(
        ConfigError, match=r"train.trackers: mlflow is not installed \(pip install 'vlmlab\[trackers\]'\)"
    ):
        Trainer(config_from_dict(tiny_raw), tmp_path / "run")
