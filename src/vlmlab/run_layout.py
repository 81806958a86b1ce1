"""The names of a run directory's files and of a checkpoint's: the one place that spells them (a test checks)."""

from __future__ import annotations

from pathlib import Path

from vlmlab.data.eval_mode import CLEAN, EvalMode

WEIGHTS = "model.safetensors"  # in a checkpoint directory
OPTIMIZER = "optimizer.safetensors"
STATE = "trainer_state.json"
MANIFEST = "manifest.json"  # {file name: sha256} of every other file, written last inside the checkpoint
FINGERPRINT = "training_fingerprint"  # trainer_state.json: the hash of the config the weights were trained with


class RunDir:
    """`runs/<name>/{config.yaml, environment.json, tokenizer/, checkpoints/{step-*, final}/, train_log.jsonl,
    train.json, done.json, predictions*.parquet, metrics*.json, measurements/, tensorboard/, mlruns/}`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    tokenizer = property(lambda self: self.path / "tokenizer")
    checkpoints = property(lambda self: self.path / "checkpoints")
    final = property(lambda self: self.path / "checkpoints" / "final")
    tensorboard = property(lambda self: self.path / "tensorboard")  # train.trackers: tensorboard
    mlruns = property(lambda self: self.path / "mlruns")  # train.trackers: mlflow's file store
    train_log = property(lambda self: self.path / "train_log.jsonl")
    environment = property(lambda self: self.path / "environment.json")  # seed, versions, git sha, hardware

    train_info = property(lambda self: self.path / "train.json")  # what training cost: steps, seconds, parameters
    done = property(lambda self: self.path / "done.json")  # a study's marker: this variant is complete
    measurements = property(lambda self: self.path / "measurements")  # content-addressed probes (vlmlab.measure)
    routing_bench = property(lambda self: self.path / "routing_bench.json")  # `vlmlab bench routing`

    def trained(self) -> bool:
        """Training finished: the final weights and the trainer's train.json both exist."""
        return (self.final / WEIGHTS).is_file() and self.train_info.is_file()

    def predictions(self, mode: EvalMode = CLEAN) -> Path:
        """`predictions.parquet`, `predictions_blind.parquet` or e.g. `predictions_noise-0.1.parquet`."""
        return self.path / f"predictions{mode.suffix}.parquet"

    def metrics(self, mode: EvalMode = CLEAN) -> Path:
        return self.path / f"metrics{mode.suffix}.json"

    def step_checkpoint(self, stage: int, step: int) -> Path:
        """`checkpoints/step-<stage:02d><step:08d>`: the names sort in training order."""
        return self.checkpoints / f"step-{stage:02d}{step:08d}"

    def step_checkpoints(self) -> list[Path]:
        """Every `checkpoints/step-*` directory, oldest first (complete or not)."""
        found = self.checkpoints.glob("step-*") if self.checkpoints.is_dir() else []
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def written_at_start(self) -> list[Path]:
        """What a start writes before its first checkpoint (removed again when it never reached one)."""
        return [self.config, self.environment, self.train_log, self.train_info, self.tokenizer, self.checkpoints,
                self.path / ".tokenizer.tmp", self.tensorboard, self.mlruns]  # fmt: skip
