"""The fixed probe set analyses and benchmarks run a trained model on: the evaluation tasks' items, taken in turn."""

from __future__ import annotations

from dataclasses import replace

from vlmlab.data.context import fit_to_context
from vlmlab.data.dataset import VQADataset
from vlmlab.data.eval_mode import CLEAN, EvalMode
from vlmlab.data.sources import load_source


def probe_items(cfg, n_probe: int):
    """The same fixed probe set for every variant: the evaluation tasks' items taken in turn (1st of each
    task, then 2nd, ...) until `n_probe`, so every task is represented and a short task leaves room to others."""

    loaded = [load_source(s, f"data.eval.{i}", cfg.data.image)[1] for i, s in enumerate(cfg.data.eval)]
    interleaved = [items[i] for i in range(max(map(len, loaded), default=0)) for items in loaded if i < len(items)]
    return interleaved[:n_probe]


def probe_dataset(model, cfg, n_probe: int, question_suffix: str = "", mode: EvalMode = CLEAN) -> VQADataset:
    """The probe items as a prompt-only dataset for `model` (optionally reworded, or with its images shown in
    another evaluation `mode`)."""
    items = probe_items(cfg, n_probe)
    if question_suffix:
        items = [replace(it, question=it.question + question_suffix) for it in items]
    items = fit_to_context(items, None, model.llm, model.num_image_tokens, cfg.eval.max_new_tokens, "probe set")
    return VQADataset(items, model.llm, cfg.data.image, model.num_image_tokens, with_answers=False, mode=mode)


def probe_batch(model, cfg, n_probe: int):
    """All probe prompts as one padded batch on the model's device (for cost measurements)."""
    data = probe_dataset(model, cfg, n_probe)
    return data.collate([data[i] for i in range(len(data))]).to(next(model.parameters()).device)
