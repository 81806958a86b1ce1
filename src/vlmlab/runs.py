"""A run directory's layout, and rebuilding a trained model from it for evaluation and analyses."""

from __future__ import annotations

from pathlib import Path

import torch

from vlmlab.config import RunConfig, load_config
from vlmlab.errors import UserError
from vlmlab.models.build import build_model
from vlmlab.models.vlm import VisionLanguageModel


class RunDir:
    """`runs/<name>/{config.yaml, tokenizer/, checkpoints/, predictions.parquet, metrics.json, train_log.jsonl}`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    tokenizer = property(lambda self: self.path / "tokenizer")
    checkpoints = property(lambda self: self.path / "checkpoints")
    final = property(lambda self: self.path / "checkpoints" / "final")
    train_log = property(lambda self: self.path / "train_log.jsonl")

    def predictions(self, blind: bool = False, perturb: str | None = None) -> Path:
        """`predictions.parquet`, `predictions_blind.parquet` or e.g. `predictions_noise-0.1.parquet`."""
        return self.path / f"predictions{_suffix(blind, perturb)}.parquet"

    def metrics(self, blind: bool = False, perturb: str | None = None) -> Path:
        return self.path / f"metrics{_suffix(blind, perturb)}.json"


def _suffix(blind: bool, perturb: str | None) -> str:
    return "_blind" if blind else f"_{perturb}" if perturb else ""


def init_run(cfg: RunConfig) -> RunDir | None:
    """The finished run `model.init_from` names (None if unset); a missing one is one line naming the key."""
    from vlmlab.train.checkpoint import WEIGHTS

    if not cfg.model.init_from:
        return None
    run = RunDir(cfg.model.init_from)
    if not (run.final / WEIGHTS).is_file():
        raise UserError(f"{run.path}: no final weights to start from [model.init_from]")
    return run


def apply_lora(model: VisionLanguageModel, cfg: RunConfig, up_to_stage: int | None = None) -> None:
    """Inject the LoRA adapters that the run's stages (up to `up_to_stage`) put into the LLM."""
    stages = cfg.train.stages if up_to_stage is None else cfg.train.stages[: up_to_stage + 1]
    for stage in stages:
        if stage.lora is None or getattr(model.llm.lm, "_vlmlab_lora", False):
            continue
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError:
            raise UserError("train.stages: LoRA needs peft (pip install 'vlmlab[lora]')") from None
        lora = LoraConfig(r=stage.lora.r, lora_alpha=stage.lora.alpha, lora_dropout=stage.lora.dropout, target_modules=stage.lora.target_modules)
        inject_adapter_in_model(lora, model.llm.lm)
        model.llm.lm._vlmlab_lora = True


def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[VisionLanguageModel, RunConfig]:
    """Rebuild the model from the run's saved config and tokenizer, then load its final weights."""
    from vlmlab.train.checkpoint import WEIGHTS, load_weights

    run = RunDir(run_dir)
    if not run.config.is_file():
        raise UserError(f"{run.path}: not a run directory (config.yaml missing)")
    if not (run.final / WEIGHTS).is_file():
        raise UserError(f"{run.final / WEIGHTS}: no final checkpoint (did training finish?)")
    cfg = load_config(run.config)
    tokenizer_dir = run.tokenizer if run.tokenizer.is_dir() else None
    model = build_model(cfg, tokenizer_dir=tokenizer_dir, pretrained_weights=tokenizer_dir is None)
    apply_lora(model, cfg)
    load_weights(model, run.final / WEIGHTS)
    return model.to(device).eval(), cfg
