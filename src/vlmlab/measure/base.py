"""A measurement probes one trained run and stores what it found as a content-addressed artifact, reused when present.

The artifact's name is `<kind>-<key>` in the run's `measurements/` directory; the key hashes the run's
fingerprint (its resolved config: what the weights and the probe set depend on), the measurement's
parameters and its version. Measuring again with the same inputs finds the file and computes nothing, so
a report or an analysis that reads measurements is reproducible byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch

from vlmlab import io
from vlmlab.config import read_yaml
from vlmlab.errors import UserError
from vlmlab.progress import console, progress
from vlmlab.registry import PartParams
from vlmlab.runs import RunDir, load_run_model


def run_fingerprint(run: RunDir) -> str:
    """Hash of the run's resolved config.yaml: its training recipe, parts and evaluation tasks (the probe set)."""
    if not run.config.is_file():
        raise UserError(f"{run.path}: not a run directory (config.yaml missing)")
    return io.content_hash(read_yaml(run.config))


class Measurement:
    """One probe of one run. Subclasses set `kind`, `title` and `Params`, and implement `measure`.

    `runtime_fields` are parameters that change how fast it runs, not what it finds (a batch size):
    they are left out of the artifact's key."""

    kind: ClassVar[str] = ""
    title: ClassVar[str] = ""  # what the progress display calls it
    version: ClassVar[int] = 1  # bump when the measurement's output changes for the same inputs
    suffix: ClassVar[str] = ".json"
    runtime_fields: ClassVar[tuple[str, ...]] = ()

    class Params(PartParams):
        pass

    def __init__(self, run_dir: str | Path, params: PartParams | None = None, **fields: Any):
        self.run = RunDir(run_dir)
        self.params = params if params is not None else self.Params(**fields)

    @cached_property
    def path(self) -> Path:
        """`<run>/measurements/<kind>-<key><suffix>`."""
        measured = self.params.model_dump(mode="json", exclude=set(self.runtime_fields))
        key = io.content_hash(
            {"run": run_fingerprint(self.run), "kind": self.kind, "version": self.version, "params": measured}
        )
        return self.run.measurements / f"{self.kind}-{key}{self.suffix}"

    def done(self) -> bool:
        return self.path.is_file()

    def measure(self, model, cfg, bar) -> None:  # pragma: no cover - interface
        """Probe the loaded model (`cfg`: its run config) and write the artifact to `self.path` atomically."""
        raise NotImplementedError

    def read(self) -> Any:
        """The stored artifact (a JSON record); a missing one is one line saying how to make it."""
        if not self.done():
            raise UserError(f"{self.path}: {self.title} of {self.run.path} not measured yet (run `vlmlab analyze`)")
        return io.read_json(self.path)

    def describe(self) -> str:
        return f"{self.title} of {self.run.path}"


def measure_all(measurements: Iterable[Measurement], device: str | torch.device | None = None) -> int:
    """Run every measurement whose artifact is missing, each a named step in the progress display; a run's model
    is loaded once for all of its missing measurements. Returns how many were computed."""
    todo: dict[Path, list[Measurement]] = {}
    for m in measurements:
        if not m.done() and m.path not in {t.path for t in todo.get(m.run.path, [])}:
            todo.setdefault(m.run.path, []).append(m)
    if not todo:
        return 0
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    count = 0
    with progress() as bar:
        for run_path, pending in todo.items():
            model, cfg = load_run_model(run_path, device=device)
            with io.confined(run_path):  # what a probe writes stays in the run, through no link
                for m in pending:
                    console.print(f"measuring {m.describe()}", highlight=False, soft_wrap=True)
                    m.measure(model, cfg, bar)
                    count += 1
            del model
    return count
