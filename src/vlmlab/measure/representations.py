"""Representation features: each LLM layer's hidden state at the last prompt token, on a fixed probe set."""

from __future__ import annotations

import torch
from pydantic import Field
from safetensors import safe_open
from safetensors.torch import save_file

from vlmlab.data.eval_mode import CLEAN, EvalMode
from vlmlab.data.probe import probe_dataset
from vlmlab.io import atomic_path
from vlmlab.measure.base import Measurement
from vlmlab.registry import PartParams


@torch.no_grad()
def capture_last_token_states(model, dataset, batch_size: int = 64) -> dict[int, torch.Tensor]:
    """Per decoder layer, the hidden state at the last prompt position (where the answer starts), (n, D) float32.

    Forward hooks on the unmodified decoder layers; only the last position of each batch is kept, so memory
    is n × D × layers, whatever the sequence length.
    """
    layers = list(model.llm.decoder.layers)
    kept: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(layers))}

    def hook(index):
        def keep(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            kept[index].append(hidden[:, -1].float().cpu())  # rows are left-padded: -1 is every row's last token

        return keep

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    model.eval()
    device = next(model.parameters()).device
    try:
        for start in range(0, len(dataset), batch_size):
            b = dataset.collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]).to(device)
            model(b.input_ids, b.attention_mask, b.image_mask, b.pixel_values)
    finally:
        for h in handles:
            h.remove()
    return {i: torch.cat(v) for i, v in kept.items()}


class RepresentationFeatures(Measurement):
    """Last-token states of every layer on the probe set under one condition: `perturb` changes the images
    (e.g. `noise:0.1`), `question_suffix` appends a meaning-preserving instruction to every question.
    Stored as safetensors, one tensor `layer.<i>` of shape (n_probe, D) per layer."""

    kind = "representations"
    title = "last-token representations"
    suffix = ".safetensors"

    class Params(PartParams):
        n_probe: int = Field(512, ge=1)
        perturb: str | None = None
        question_suffix: str = ""

    def describe(self) -> str:
        p = self.params
        changes = [
            f"images {p.perturb}" if p.perturb else "",
            f"questions + {p.question_suffix.strip()!r}" if p.question_suffix else "",
        ]
        condition = ", ".join(c for c in changes if c)
        return f"{self.title} ({condition or 'clean'}) of {self.run.path}"

    def measure(self, model, cfg, bar) -> None:
        p = self.params
        mode = EvalMode.parse(p.perturb) if p.perturb else CLEAN
        data = probe_dataset(model, cfg, p.n_probe, p.question_suffix, mode)
        states = capture_last_token_states(model, data, cfg.eval.batch_size)
        with atomic_path(self.path) as tmp:
            save_file({f"layer.{i}": t.contiguous() for i, t in states.items()}, str(tmp))

    def read(self):
        """The artifact's path (layers are read one at a time with `layer`, so comparisons stay small)."""
        if not self.done():
            super().read()  # the one-line "not measured yet" error
        return self.path


def layer_count(path) -> int:
    with safe_open(str(path), "pt") as f:
        return len(list(f.keys()))


def layer(path, index: int) -> torch.Tensor:
    """One layer's (n, D) states, read alone: comparisons hold two layers in memory at a time."""
    with safe_open(str(path), "pt") as f:
        return f.get_tensor(f"layer.{index}")
