"""`vlmlab verify RUN_DIR`: check every checkpoint of a run (and an imported run's from_pretrained parts) against
its sha256 manifest and its config against the training fingerprint, and print the run's digest;
`--write-manifest` gives a run written before manifests existed its manifests, once, and records that it did.

The digest is the sha256 of the final checkpoint's manifest and the parts' manifests: one value naming the
weights an evaluation uses. A manifest proves that files did not change since it was written, not who wrote it
(anyone can recompute a sha256); comparing the digest with the one the run's author publishes is what makes a
shared run authentic (docs/reliability.md, "Threat model").
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from vlmlab import io
from vlmlab.checkpoint import MANIFEST, NO_MANIFEST, STATE, WRITTEN, damage, load_trainer_state, write_manifest
from vlmlab.config import load_config, read_yaml
from vlmlab.errors import UserError
from vlmlab.locks import exclusive
from vlmlab.run_layout import FINGERPRINT
from vlmlab.runs import RunDir, training_fingerprint


@dataclass
class RunCheck:
    """What `verify_run` found: each checked directory with its problem (None: it checks out)."""

    run: Path
    checked: list[tuple[Path, str | None]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    digest: str | None = None

    @property
    def problems(self) -> list[tuple[Path, str]]:
        return [(d, p) for d, p in self.checked if p is not None]


def checkpoint_dirs(run: RunDir) -> list[tuple[Path, str | None]]:
    """(directory, its state file or None) of every checkpoint of the run: final, step-*, and the from_pretrained
    dirs an imported run's final checkpoint names (`parts_from_pretrained`)."""
    out: list[tuple[Path, str | None]] = []
    if run.final.is_dir():
        out.append((run.final, STATE))
    steps = sorted(run.checkpoints.glob("step-*")) if run.checkpoints.is_dir() else []
    out += [(step, STATE) for step in steps if step.is_dir()]
    if (run.final / STATE).is_file():
        parts = load_trainer_state(run.final).get("parts_from_pretrained", [])
        cfg = load_config(run.config)
        for group in parts if isinstance(parts, list) else []:
            spec = getattr(cfg.model, str(group), None)
            path = getattr(spec.params, "path", None) if spec is not None else None
            if path is not None:
                out.append((Path(path), None))
    return out


def verify_run(run_dir: str | Path, write: bool = False) -> RunCheck:
    """Check the run's checkpoints, parts and training fingerprint; with `write`, first give each checkpoint that
    has no manifest one (the final checkpoint also gets its training fingerprint from today's config.yaml when it
    has none, and a record that both were written after training)."""
    run = RunDir(run_dir)
    if not run.config.is_file():
        raise UserError(f"{run.path}: not a run directory (config.yaml missing)")
    check = RunCheck(run.path)
    dirs = checkpoint_dirs(run)
    if not dirs:
        raise UserError(f"{run.path}: no checkpoint to verify (checkpoints/ is empty)")
    if write:
        with exclusive(run.path, "run"):
            for directory, state_file in dirs:
                if damage(directory, state_file) == NO_MANIFEST:
                    _write(run, directory)
                    check.written.append(directory)
    for directory, state_file in dirs:
        check.checked.append((directory, damage(directory, state_file)))
    if (run.final / STATE).is_file() and all(p is None for d, p in check.checked if d == run.final):
        state = load_trainer_state(run.final)
        trained_from = state.get(FINGERPRINT)
        if trained_from is None:
            check.checked.append((run.config, "the final checkpoint names no training fingerprint to check it with"))
        elif trained_from != training_fingerprint(read_yaml(run.config)):
            check.checked.append((run.config, "its model, data or training settings changed after training"))
    if not check.problems:
        check.digest = _digest([d for d, s in dirs if d == run.final or s is None])
    return check


def _write(run: RunDir, directory: Path) -> None:
    """The manifest of a checkpoint written before manifests existed (the final one: with its fingerprint)."""
    if directory == run.final:
        state = load_trainer_state(directory)
        now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        state[WRITTEN] = {"by": "vlmlab verify --write-manifest", "at": now}
        if FINGERPRINT not in state:
            state[FINGERPRINT] = training_fingerprint(read_yaml(run.config))
            state[WRITTEN]["fingerprint_of"] = "config.yaml as it was then"
        io.write_text(directory / STATE, json.dumps(state))
    write_manifest(directory)


def _digest(directories: list[Path]) -> str:
    """sha256 over the manifests of `directories`, in order (the final checkpoint first, then the parts)."""
    digest = hashlib.sha256()
    for directory in directories:
        digest.update((directory / MANIFEST).read_bytes())
    return "sha256:" + digest.hexdigest()
