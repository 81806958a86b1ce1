"""A run directory read back: the run `model.init_from` names, resume policy, and rebuilding a trained model for
evaluation and measurements (its file names: `vlmlab.run_layout`)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from vlmlab import grants, io
from vlmlab.checkpoint import MANIFEST, STATE, WEIGHTS, WRITTEN, load_trainer_state, load_weights, verify
from vlmlab.config import RunConfig, config_from_dict, flatten, load_config, read_yaml
from vlmlab.errors import ConfigError, UserError
from vlmlab.models.build import build_model
from vlmlab.models.vlm import VisionLanguageModel
from vlmlab.run_layout import FINGERPRINT, RunDir

__all__ = ["RunDir"]  # re-exported: where the layers above have always found it


def init_run(cfg: RunConfig) -> RunDir | None:
    """The finished run `model.init_from` names (None if unset); a missing one is one line naming the key."""
    if not cfg.model.init_from:
        return None
    run = RunDir(cfg.model.init_from)
    if not (run.final / WEIGHTS).is_file():
        raise UserError(f"{run.path}: no final weights to start from [model.init_from]")
    return run


def init_config(run: RunDir) -> RunConfig:
    """The config the `model.init_from` run was trained with."""
    return config_from_dict(read_yaml(run.config))


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
        lora = LoraConfig(
            r=stage.lora.r,
            lora_alpha=stage.lora.alpha,
            lora_dropout=stage.lora.dropout,
            target_modules=stage.lora.target_modules,
        )
        inject_adapter_in_model(lora, model.llm.lm)
        model.llm.lm._vlmlab_lora = True


def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[VisionLanguageModel, RunConfig]:
    """Rebuild the model from the run's saved config and tokenizer, then load its final weights: only after the
    weights (and an imported run's parts) match their manifests and the config is the one they were trained from."""
    run = RunDir(run_dir)
    if not run.config.is_file():
        raise UserError(f"{run.path}: not a run directory (config.yaml missing)")
    if not (run.final / WEIGHTS).is_file():
        raise UserError(f"{run.final / WEIGHTS}: no final checkpoint (did training finish?)")
    cfg = load_config(run.config)
    verify(run.final, run=run.path)  # the weights are the ones training wrote (sha256 manifest)
    state = load_trainer_state(run.final)
    if isinstance(state.get(WRITTEN), dict):  # vouched for by `vlmlab verify --write-manifest`, not by training
        grants.note(str(run.path), f"{run.final}: manifest written after training ({state[WRITTEN].get('at')})")
    _check_config_unchanged(run, state)
    parts = state.get("parts_from_pretrained", [])
    for group in parts if isinstance(parts, list) else []:  # an imported run: the from_pretrained dirs it names
        path = getattr(cfg.model, group, None)
        path = getattr(path.params, "path", None) if path is not None else None
        if path is not None:
            verify(Path(path), run=run.path, state_file=None)
    tokenizer_dir = run.tokenizer if run.tokenizer.is_dir() else None
    try:
        model = build_model(cfg, tokenizer_dir=tokenizer_dir, pretrained_weights=tokenizer_dir is None)
    except ConfigError as exc:  # e.g. a code-running option the run's config asks for (vlmlab.grants)
        raise exc.within(str(run.config)) from None
    apply_lora(model, cfg)
    # an imported run keeps its vision tower and LLM as from_pretrained dirs (parts/): only the rest is in `final`
    from_parts = tuple(f"{group}." for group in parts if isinstance(group, str))
    load_weights(model, run.final / WEIGHTS, may_miss=from_parts)
    return model.to(device).eval(), cfg


# What may differ when a run is resumed. Settings that never touch the weights may change freely; the recipe
# fixes a stopped run needs (learning rates, warmup, what a non-finite step does) may change and are recorded
# as provenance; anything else (model, data, seed, batch, schedule shape) is refused.
RESUME_FREE = (
    "name",
    "eval",
    "data.eval",
    "train.log_every",
    "train.checkpoint_every",
    "train.threads",
    "train.trackers",
    "train.memory_check",
)
# recipe fixes a resume may make, recorded as provenance: after a non-finite stop (learning rates, warmup, the
# non-finite policy) or a bad-image stop (the bad-image policy and its limit)
RESUME_RECIPE = re.compile(
    r"^(train\.warmup_ratio|train\.on_nonfinite(\..*)?|train\.stages\.\d+\.lr(\..*)?"
    r"|data\.on_bad_image|data\.max_bad_fraction)$"
)


def normalized_config(raw: dict) -> dict:
    """A saved config.yaml as this version resolves it: a field added since it was written reads as its default, so
    a run saved before that field existed compares equal to the same config today. Unreadable data is returned as
    it is (it then differs, and the caller says how)."""
    try:
        return config_from_dict(raw).resolved()
    except (UserError, ValueError, TypeError):
        return raw


def resume_differences(saved: dict, new: dict) -> tuple[dict[str, list], str | None]:
    """({recipe key: [old, new]} that a resume may take, the first key it may not change, or None)."""
    a, b = flatten(normalized_config(saved)), flatten(new)
    recipe, refused = {}, None
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key) or any(key == f or key.startswith(f + ".") for f in RESUME_FREE):
            continue
        if RESUME_RECIPE.match(key):
            recipe[key] = [a.get(key), b.get(key)]
        elif refused is None:
            refused = key
    return recipe, refused


def training_fingerprint(raw: dict) -> str:
    """Hash of what the weights depend on: the config without its evaluation settings (`data.eval`, `eval`, `name`),
    so evaluating on other data stays possible while an edit to the model, data or recipe is caught."""
    kept = {k: v for k, v in raw.items() if k not in ("name", "eval")}
    if isinstance(kept.get("data"), dict):
        kept["data"] = {k: v for k, v in kept["data"].items() if k != "eval"}
    return io.content_hash(kept)


def _check_config_unchanged(run: RunDir, state: dict) -> None:
    """The final checkpoint names the fingerprint of the config it was trained from; an edited config is refused,
    and so is a checkpoint without one (deleting the key does not skip the check).

    The fingerprint is an unkeyed hash that anyone can recompute, and the manifest that covers it too: together
    they catch an accident (a hand-edited config.yaml, a mixed-up or damaged checkpoint), not a forger. A run
    from someone else is made safe by what it cannot do (run code, write outside itself, overflow a parser),
    and authentic only by comparing `vlmlab verify`'s digest with its author's (docs/reliability.md)."""
    trained_from = state.get(FINGERPRINT)
    if trained_from is None:
        if (run.final / MANIFEST).is_file():  # listed by the manifest, yet without the key: removed by hand
            raise UserError(
                f"{run.final / STATE}: no training fingerprint, though the checkpoint's manifest vouches for this "
                "file (it was rewritten after training); restore the run, or train it again"
            )
        # no manifest either: only reached with --allow-unverified (verify() refused otherwise)
        grants.note(str(run.path), f"{run.config}: not checked against the weights (no training fingerprint)")
        return
    if trained_from != training_fingerprint(read_yaml(run.config)):
        raise UserError(
            f"{run.config}: its model, data or training settings changed after training (the final "
            "checkpoint was trained from another config); restore them, or train a new run"
        )
