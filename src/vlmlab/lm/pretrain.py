"""Causal-LM pretraining of a tiny backbone on an offline corpus, cached by recipe, scored in held-out bits per byte."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from vlmlab.cache import cache_root
from vlmlab.io import content_hash, read_json, write_json
from vlmlab.lm.bits_per_byte import bits_per_byte
from vlmlab.lm.corpus import Corpus, load_corpus
from vlmlab.lm.recipe import PretrainRecipe
from vlmlab.progress import console, progress, quiet_transformers
from vlmlab.training_step import Fault, NonFiniteGuard, StepLoop, TrainingStep, likely_cause, schedule

RECORD = "pretraining.json"


@dataclass(frozen=True)
class Backbone:
    """A cached pretrained backbone: HF model + tokenizer files and the record of how it was made."""

    path: Path
    record: dict[str, Any]
    built_now: bool


def backbone_dir(part_id: str, architecture: dict[str, Any], recipe: PretrainRecipe, corpus: Corpus) -> Path:
    """`$VLMLAB_CACHE/backbones/<id>-<hash>`; the hash covers everything that decides the weights."""
    key = content_hash(
        {
            "id": part_id,
            "architecture": architecture,
            "recipe": recipe.model_dump(mode="json"),
            "corpus": corpus.version,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        }
    )
    return cache_root() / "backbones" / f"{part_id}-{key}"


def ensure_backbone(
    part_id: str,
    architecture: dict[str, Any],
    recipe: PretrainRecipe,
    train_tokenizer: Callable[[list[str]], PreTrainedTokenizerBase],
    make_lm: Callable[[PreTrainedTokenizerBase], PreTrainedModel],
) -> Backbone:
    """Return the cached backbone, pretraining it first if this recipe has never been built here."""
    corpus = load_corpus(recipe.corpus)
    target = backbone_dir(part_id, architecture, recipe, corpus)
    if (target / RECORD).is_file():
        return Backbone(target, read_json(target / RECORD), built_now=False)
    console.print(f"pretraining {part_id} ({recipe.tokens:,} tokens of {corpus.name}) -> {target}")
    started = time.perf_counter()
    tokenizer = train_tokenizer(corpus.train)
    # the recipe's own seed, in a forked RNG: building a rung inside build_model must leave the global RNG as
    # reading it from the cache does, or the parts built after it (projector, routing) would differ
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        lm = make_lm(tokenizer)
        curve = pretrain(lm, tokenizer, corpus.train, recipe, label=part_id)
    lm.eval()
    heldout = bits_per_byte(lm, tokenizer, corpus.heldout, window=recipe.seq_len)
    seconds = time.perf_counter() - started
    seen = recipe.steps * recipe.batch_size * recipe.seq_len
    record = {
        "backbone": part_id,
        "architecture": architecture,
        "recipe": recipe.model_dump(mode="json"),
        "corpus": corpus.describe(),
        "parameters": parameter_counts(lm),
        "vocab_size": len(tokenizer),
        "steps": recipe.steps,
        "tokens_seen": seen,
        "corpus_tokens": curve["corpus_tokens"],
        "epochs": round(seen / curve["corpus_tokens"], 3),
        "seconds": round(seconds, 1),
        "tokens_per_s": round(seen / curve["train_seconds"], 1),
        "final_train_loss": curve["loss"][-1][1],
        "loss_curve": curve["loss"],
        "heldout": heldout,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    _store(target, lm, tokenizer, record)
    console.print(f"{part_id}: held-out {heldout['bits_per_byte']:.4f} bits/byte after {seconds:.0f} s")
    return Backbone(target, record, built_now=True)


def load_backbone_lm(path: Path) -> PreTrainedModel:
    """The cached LM in eval mode (sdpa attention), without transformers' own progress bars."""
    from transformers import LlamaForCausalLM

    with quiet_transformers():
        lm = LlamaForCausalLM.from_pretrained(str(path))
    lm.config._attn_implementation = "sdpa"
    return lm.eval()


def parameter_counts(lm: PreTrainedModel) -> dict[str, int]:
    total = sum(p.numel() for p in lm.parameters())
    embeddings = lm.get_input_embeddings().weight.numel()
    head = lm.get_output_embeddings()
    if head is not None and head.weight.data_ptr() != lm.get_input_embeddings().weight.data_ptr():
        embeddings += head.weight.numel()
    return {"total": total, "non_embedding": total - embeddings}


def token_stream(tokenizer: PreTrainedTokenizerBase, docs: list[str]) -> list[np.ndarray]:
    """Each document as `<bos> text <eos>` token ids (packed into sequences by `pretrain`)."""
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return [np.asarray([bos, *doc, eos], dtype=np.int64) for doc in ids]


def packed_batches(docs: list[np.ndarray], recipe: PretrainRecipe):
    """Endless (batch_size, seq_len) batches: every epoch concatenates the documents in a new seeded order."""
    gen = np.random.default_rng(recipe.seed)
    need = recipe.batch_size * recipe.seq_len
    buffer = np.empty(0, dtype=np.int64)
    while True:
        order = gen.permutation(len(docs))
        buffer = np.concatenate([buffer, *(docs[i] for i in order)])
        while len(buffer) >= need:
            yield torch.from_numpy(buffer[:need].reshape(recipe.batch_size, recipe.seq_len).copy())
            buffer = buffer[need:]


def pretrain(lm: PreTrainedModel, tokenizer, docs: list[str], recipe: PretrainRecipe, label: str) -> dict[str, Any]:
    """AdamW, linear warm-up then cosine to `min_lr_ratio`, gradient clipping at 1 (the shared `TrainingStep`; a
    non-finite loss or gradient stops it naming the step); returns the loss curve."""
    stream = token_stream(tokenizer, docs)
    corpus_tokens = int(sum(len(d) for d in stream))
    decay = [p for p in lm.parameters() if p.ndim >= 2]
    no_decay = [p for p in lm.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr,
        betas=(0.9, 0.95),
    )
    steps, warmup = recipe.steps, max(1, int(recipe.warmup_ratio * recipe.steps))
    factor = schedule("cosine", warmup, steps, floor=recipe.min_lr_ratio)
    update = TrainingStep(opt, list(lm.parameters()), factor, 1.0, NonFiniteGuard("stop"))
    lm.train()
    batches = packed_batches(stream, recipe)
    curve: list[list[float]] = []
    started = time.perf_counter()

    def one_step(step: int) -> tuple[float, float]:
        batch = next(batches)
        update.begin(step)
        loss = lm(input_ids=batch, labels=batch).loss
        update.backward(loss)
        hint = likely_cause(
            "model.llm.pretrain.lr", {"lm": recipe.lr}, factor(step), warmup_key="model.llm.pretrain.warmup_ratio"
        )
        update.update(lambda: Fault(f"pretraining {label} step {step + 1}", hint))
        return loss.item(), 1.0

    with progress() as bar:
        task = bar.add_task(f"pretrain {label}", total=steps, info="")

        def log(done: int, loss: float) -> None:
            curve.append([done, round(loss, 4)])
            bar.update(task, info=f"loss {curve[-1][1]:.3f}")

        StepLoop(steps, log_every=max(1, steps // 50), on_log=log, bar=bar, job=task).run(one_step)
    return {"loss": curve, "corpus_tokens": corpus_tokens, "train_seconds": time.perf_counter() - started}


def _store(target: Path, lm: PreTrainedModel, tokenizer, record: dict[str, Any]) -> None:
    """Write into a temp dir, then rename: a half-written backbone is never mistaken for a cached one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{time.time_ns()}"
    with quiet_transformers():
        lm.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    write_json(tmp / RECORD, record)
    try:
        tmp.rename(target)
    except OSError:  # another process stored the same recipe first; theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
