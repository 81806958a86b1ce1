"""Checkpoints as safetensors + JSON (no pickle): weights, optimizer, scheduler position and RNG states."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vlmlab import bounded, grants
from vlmlab.errors import EXIT_ENVIRONMENT, UserError
from vlmlab.io import atomic_dir, file_sha256, remove_tree, write_text
from vlmlab.progress import console
from vlmlab.run_layout import MANIFEST, OPTIMIZER, STATE, WEIGHTS, RunDir  # noqa: F401 - re-exported names

WRITTEN = "manifest_written"  # trainer_state.json: the manifest was written after training (`vlmlab verify`)


def model_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous, de-aliased copy of a state dict (tied weights are stored once per name)."""
    seen: dict[int, torch.Tensor] = {}
    out = {}
    for name, t in state.items():
        key = t.data_ptr()
        out[name] = seen[key].clone() if key in seen else t.detach().contiguous()
        seen.setdefault(key, out[name])
    return out


def save_weights(model: torch.nn.Module, path: Path, state: dict[str, torch.Tensor] | None = None) -> None:
    """The model's weights as safetensors; `state`: its state dict when it was gathered from shards (FSDP / DeepSpeed)."""
    save_file(model_state(model.state_dict() if state is None else state), str(path))


def load_weights(model: torch.nn.Module, path: str | Path, may_miss: tuple[str, ...] = ()) -> list[str]:
    """Load weights, naming the file and tensor on any missing, unexpected or mis-shaped entry.

    Tensors whose names start with a prefix in `may_miss` may be absent (they keep their initial values,
    e.g. a routing branch added on top of a trained model); their names are returned.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint weights not found")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    own = model.state_dict()
    for name, tensor in state.items():
        if name not in own:
            raise UserError(f"{path}: unexpected tensor {name!r} (does the config match the checkpoint?)")
        if own[name].shape != tensor.shape:
            raise UserError(
                f"{path}: {name} has shape {tuple(tensor.shape)} but the model built from the config has "
                f"{tuple(own[name].shape)} (mismatched dims)"
            )
    missing = [n for n in own if n not in state]
    allowed = [n for n in missing if n.startswith(may_miss)] if may_miss else []
    missing = [n for n in missing if n not in allowed]
    if missing:
        raise UserError(f"{path}: missing tensor {missing[0]!r} (and {len(missing) - 1} more)")
    model.load_state_dict(state, strict=not allowed)
    return allowed


def load_file_state(run_dir: str | Path) -> dict[str, torch.Tensor]:
    """The final weights of a run as a dict of tensors."""
    return load_file(str(RunDir(run_dir).final / WEIGHTS))


def _optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
        "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    trainer_state: dict[str, Any],
    weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint into a temp dir, then rename it into place: a crash leaves no partial one.
    `weights`: the model's state dict when it was gathered from shards (FSDP / DeepSpeed)."""
    try:
        with atomic_dir(directory) as tmp:
            save_weights(model, tmp / WEIGHTS, weights)
            state = dict(trainer_state, rng=rng_state())
            if optimizer is not None:
                tensors, meta = _optimizer_to_flat(optimizer)
                save_file(tensors, str(tmp / OPTIMIZER))
                state["optimizer"] = meta
            (tmp / STATE).write_text(json.dumps(state))
            write_manifest(tmp)
    except SafetensorError as exc:  # e.g. a full disk while serializing; the temp dir is gone, nothing half-written
        raise UserError(
            f"{directory}: cannot write the checkpoint ({str(exc).splitlines()[0]})", EXIT_ENVIRONMENT
        ) from None
    return directory


def write_manifest(directory: Path) -> None:
    """`manifest.json`: the sha256 of every file of a checkpoint (a bit flip or a truncated file is then found)."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.is_symlink() and p.name != MANIFEST)
    write_text(directory / MANIFEST, json.dumps({p.name: file_sha256(p) for p in files}, indent=1, sort_keys=True))


NO_MANIFEST = f"no {MANIFEST}, so its files cannot be verified"


def damage(directory: Path, state_file: str | None = STATE) -> str | None:
    """Why a checkpoint (or a from_pretrained dir, `state_file=None`) cannot be trusted: a missing manifest, a
    missing, unreadable or changed file, or a file the manifest does not list; None when it checks out."""
    manifest = directory / MANIFEST
    if state_file is not None and not (directory / state_file).is_file():
        return f"{state_file} missing"
    if not manifest.is_file():
        return NO_MANIFEST
    try:
        listed = bounded.record_file(manifest, "manifest")
    except UserError:
        return f"{MANIFEST} unreadable"
    if not isinstance(listed, dict) or not all(isinstance(v, str) for v in listed.values()):
        return f"{MANIFEST} unreadable"
    for name, digest in listed.items():
        file = directory / name
        if "/" in name or name in ("", ".", "..") or file.is_symlink() or not file.is_file():
            return f"{name} missing"
        if file_sha256(file) != digest:
            return f"{name} does not match its sha256 in {MANIFEST} (changed or corrupted)"
    unlisted = sorted(
        p.name
        for p in directory.iterdir()
        if p.name != MANIFEST and p.name not in listed and not p.name.startswith(".")
    )
    if unlisted:
        return f"{unlisted[0]} is not listed in {MANIFEST} (added after the checkpoint was written)"
    return None


def verify(
    directory: Path, run: Path | None = None, state_file: str | None = STATE, outputs: Path | None = None
) -> None:
    """Refuse a damaged or unverifiable checkpoint of `run` with one line naming it and the file. A checkpoint
    without a manifest (written before manifests existed) is used only with --allow-unverified, noted for the
    outputs of `outputs` (default: `run`)."""
    problem = damage(directory, state_file)
    if problem is None:
        return
    if problem == NO_MANIFEST:
        where = run if run is not None else directory
        if grants.allows("allow_unverified"):
            grants.note(str(outputs or where), f"{directory}: used without a manifest (--allow-unverified)")
            console.print(
                f"[yellow]warning[/yellow]: {directory}: {NO_MANIFEST}; used as it is (--allow-unverified), "
                "and the outputs say so",
                soft_wrap=True,
                highlight=False,
            )
            return
        raise UserError(
            f"{directory}: {NO_MANIFEST}; if you trust it, write one with `vlmlab verify {where} --write-manifest`"
            " (or use it once with --allow-unverified)"
        )
    raise UserError(f"{directory}: {problem}; restore it, or train again")


def load_trainer_state(directory: Path) -> dict[str, Any]:
    try:
        state = bounded.record_file(directory / STATE, "trainer state")
    except UserError:
        state = None
    if not isinstance(state, dict):
        raise UserError(f"{directory / STATE}: unreadable (torn or edited); restore it, or train again")
    return state


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path, state: dict[str, Any]) -> None:
    tensors = load_file(str(directory / OPTIMIZER))
    optimizer.load_state_dict(_optimizer_from_flat(tensors, state["optimizer"]))


def latest_checkpoint(run_dir: Path, verified: bool = False, report=None) -> Path | None:
    """The newest complete `step-*` checkpoint (complete = its trainer_state.json exists). With `verified`, the
    newest one whose files match their manifest: a damaged one is passed over (and named to `report`)."""
    ckpts = [c for c in RunDir(run_dir).step_checkpoints() if (c / STATE).is_file()]
    for checkpoint in reversed(ckpts):
        problem = damage(checkpoint) if verified else None
        if problem is None:
            return checkpoint
        if report is not None:
            report(f"{checkpoint}: {problem}; passed over")
    return None


def remove_partial(run_dir: Path) -> None:
    """Delete what a killed process left half-written: temp checkpoint dirs (`.step-*`, `.final.*`), the temp
    tokenizer dir (`.tokenizer.*`) and atomic-write temp files (`.*.tmp`). They are never read, so this only tidies
    (a link among them is removed as a link, never followed)."""
    for folder in (run_dir, RunDir(run_dir).checkpoints):
        if not folder.is_dir():
            continue
        for leftover in folder.glob(".*"):
            if leftover.is_dir() and leftover.name.startswith((".step-", ".final.", ".tokenizer.")):
                remove_tree(leftover)
            elif (leftover.is_file() or leftover.is_symlink()) and leftover.name.endswith(".tmp"):
                remove_tree(leftover)


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    for old in RunDir(run_dir).step_checkpoints()[:-keep]:
        remove_tree(old)
