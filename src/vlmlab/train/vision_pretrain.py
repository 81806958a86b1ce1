"""`vision-pretrain` stage: the vision tower alone learns from labelled images through throw-away heads.

The stage's `objective` says what it learns: `classify` (an ImageNet analogue) mean-pools the tokens into one
linear head per image attribute (e.g. shape, colour; labels from `Task.image_labels`); `dense` (a detection
analogue, `train.dense_pretrain`) labels every token with what occupies its patch and that object's box
(objects from `Task.image_objects`).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlmlab.cache import cache_root
from vlmlab.config import ImageConfig, RunConfig, StageConfig, own_seed, stage_seed
from vlmlab.data.bad_images import BadImages, stop_error
from vlmlab.data.images import load_image, normalize, to_array
from vlmlab.data.sources import load_source
from vlmlab.errors import DataError, UserError
from vlmlab.models.vision.base import VisionEncoder
from vlmlab.train import vision_cache
from vlmlab.training_step import Fault, NonFiniteGuard, StepLoop, TrainingStep, likely_cause, schedule

IGNORE = -100


def label_table(image_labels: dict[str, dict[str, str]]) -> tuple[list[str], dict[str, list[str]], np.ndarray]:
    """(image paths, classes per attribute, int labels (n_images, n_attributes) with -100 = unknown).

    Images keep the order of `image_labels` (the trainer orders them by a location-free key, so where a
    dataset lives on disk does not change the pretraining order)."""
    paths = list(image_labels)
    attributes = sorted({a for labels in image_labels.values() for a in labels})
    classes = {a: sorted({lab[a] for lab in image_labels.values() if a in lab}) for a in attributes}
    table = np.full((len(paths), len(attributes)), IGNORE, dtype=np.int64)
    for i, path in enumerate(paths):
        for j, attr in enumerate(attributes):
            if attr in image_labels[path]:
                table[i, j] = classes[attr].index(image_labels[path][attr])
    return paths, classes, table


def _augment(batch: np.ndarray, kinds: list[str], rng: np.random.Generator):
    """(augmented copy of the (B, H, W, C) batch, flip per image or None, counter-clockwise quarter turns per
    image or None): what moved, so dense labels can move with the pixels."""
    out = batch.copy()
    flip = turns = None
    if "hflip" in kinds:
        flip = rng.random(len(out)) < 0.5
        out[flip] = out[flip, :, ::-1]
    if "rot90" in kinds:
        turns = rng.integers(0, 4, len(out))
        for i, k in enumerate(turns):
            out[i] = np.rot90(out[i], k, axes=(0, 1))
    return out, flip, turns


class ClassifyObjective:
    """The `classify` objective: the tower's tokens are mean-pooled into one linear head per image attribute."""

    name = "classify"
    learns_from = "image-level labels"

    @staticmethod
    def labels(task, items) -> dict[str, dict[str, str]]:
        return task.image_labels(items)

    def __init__(self, vision, paths, image_labels: dict[str, dict[str, str]], image: ImageConfig, device):
        _, self.classes, table = label_table(image_labels)
        self.labels = torch.from_numpy(table)
        self.heads = nn.ModuleDict({a: nn.Linear(vision.embed_dim, len(c)) for a, c in self.classes.items()}).to(device)
        self.correct = np.zeros(len(self.classes))
        self.seen = np.zeros(len(self.classes))
        self.device = device

    def loss(self, features, idx: np.ndarray, flips, turns, record: bool) -> torch.Tensor:
        pooled = features.tokens.mean(1)
        target = self.labels[torch.from_numpy(idx)].to(self.device)
        loss = 0.0
        for j, (_attr, head) in enumerate(self.heads.items()):
            logits = head(pooled)
            loss = loss + F.cross_entropy(logits, target[:, j], ignore_index=IGNORE)
            if record:  # accuracy over the last epoch's batches
                known = target[:, j] != IGNORE
                self.correct[j] += int((logits.argmax(1) == target[:, j])[known].sum())
                self.seen[j] += int(known.sum())
        return loss

    def train_metrics(self) -> dict[str, float]:
        return {f"train_top1/{a}": float(self.correct[j] / max(self.seen[j], 1)) for j, a in enumerate(self.heads)}

    def heldout(self, vision, data, heldout_labels, cfg, batch_size: int) -> dict[str, float]:
        return heldout_top1(vision, self.heads, self.classes, data, heldout_labels, cfg, self.device, batch_size)


def objective_class(name: str):
    """The objective class of a vision-pretrain stage's `objective`."""
    from vlmlab.train.dense_pretrain import DenseObjective

    return {"classify": ClassifyObjective, "dense": DenseObjective}[name]


class ImageArrays:
    """Preprocessed images by path (what `pretrain_vision` needs of a dataset), for use without a VQA dataset."""

    def __init__(self, image: ImageConfig):
        self.image = image
        self._arrays: dict[str, np.ndarray] = {}  # the stage holds every image in memory anyway

    def image_array(self, path: str) -> np.ndarray:
        if path not in self._arrays:
            self._arrays[path] = to_array(load_image(path), self.image.size, self.image.geometry)
        return self._arrays[path]


def pretrain_vision(
    vision: VisionEncoder,
    data,
    image_labels: dict[str, dict[str, str]],
    stage: StageConfig,
    cfg: RunConfig,
    seed: int,
    device: torch.device,
    bar,
    heldout: dict[str, dict[str, str]] | None = None,
    stage_key: str = "train.stages",
) -> dict[str, float]:
    """Train `vision` (in place) to classify each image's attributes (`data.image_array(path)` gives the pixels);
    returns the last epoch's train top-1 per attribute and, with `heldout` labels, held-out top-1. The steps are
    the shared `TrainingStep` (schedule, clipping, the run's non-finite policy) in a `StepLoop`."""
    if not image_labels:
        raise UserError(
            f"{stage_key}: vision-pretrain found no {objective_class(stage.objective).learns_from} in the training task"
        )
    paths = list(image_labels)
    images = np.stack([data.image_array(p) for p in paths])
    objective = objective_class(stage.objective)(vision, paths, image_labels, cfg.data.image, device)
    params = [p for p in vision.parameters()] + list(objective.heads.parameters())
    for p in vision.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=stage.lr["vision"], weight_decay=cfg.train.weight_decay, betas=cfg.train.betas)
    opt.zero_grad(set_to_none=True)
    batch_size = stage.batch_size or cfg.train.batch_size
    per_epoch = math.ceil(len(paths) / batch_size)
    total = stage.max_steps or max(1, math.ceil(stage.epochs * per_epoch))
    factor = schedule(cfg.train.schedule, int(cfg.train.warmup_ratio * total), total)
    guard = NonFiniteGuard(cfg.train.on_nonfinite.policy, cfg.train.on_nonfinite.max_skips)
    update = TrainingStep(opt, params, factor, cfg.train.max_grad_norm, guard)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    job = bar.add_task(f"{stage.name}", total=total, info="")
    vision.train()
    epoch_order: list[torch.Tensor] = []

    def one_step(step: int) -> tuple[float, float] | None:
        k = step % per_epoch
        if k == 0:  # each epoch a new permutation from the stage's own generator
            epoch_order[:] = [torch.randperm(len(paths), generator=gen)]
        idx = epoch_order[0][k * batch_size : (k + 1) * batch_size].numpy()
        update.begin(step)
        batch, flips, turns = _augment(images[idx], stage.augment, rng)
        pixels = normalize(batch, cfg.data.image.mean, cfg.data.image.std)
        features = vision(torch.from_numpy(pixels).to(device))
        loss = objective.loss(features, idx, flips, turns, record=step >= total - per_epoch)
        update.backward(loss)
        where = f"{stage_key} ({stage.name}) step {step + 1}"
        hint = likely_cause(f"{stage_key}.lr", {"vision": stage.lr["vision"]}, factor(step), cfg.train.mixed_precision)
        skipped = update.update(lambda: Fault(where, hint))
        return None if skipped else (float(loss.detach()), 1.0)

    loop = StepLoop(
        total, log_every=1, on_log=lambda _, loss: bar.update(job, info=f"loss {loss:.3f}"), bar=bar, job=job
    )
    loop.run(one_step)
    metrics = objective.train_metrics()
    if heldout:
        metrics.update(objective.heldout(vision, data, heldout, cfg, batch_size))
        metrics["heldout_images"] = len(heldout)
    return metrics


@torch.no_grad()
def heldout_top1(vision, heads, classes, data, heldout, cfg, device, batch_size) -> dict[str, float]:
    """Top-1 per attribute on images never trained on (labels of classes unseen in training are skipped)."""
    vision.eval()
    correct, seen = dict.fromkeys(heads, 0), dict.fromkeys(heads, 0)
    paths = list(heldout)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        pixels = normalize(np.stack([data.image_array(p) for p in chunk]), cfg.data.image.mean, cfg.data.image.std)
        pooled = vision(torch.from_numpy(pixels).to(device)).tokens.mean(1)
        for attr, head in heads.items():
            pred = head(pooled).argmax(1).tolist()
            for path, p in zip(chunk, pred):
                label = heldout[path].get(attr)
                if label in classes[attr]:
                    seen[attr] += 1
                    correct[attr] += int(classes[attr][p] == label)
    vision.train()
    return {f"heldout_top1/{a}": correct[a] / seen[a] for a in heads if seen[a]}


def ordered_image_labels(sources, objective: str = "classify") -> dict[str, dict]:
    """What `objective` learns from (its class's `labels`), per image, from every (task, items) source; with
    `classify`, attributes a source lacks stay unknown.

    Ordered by (source, path relative to the source's image root): the same data gives the same
    pretraining order wherever it is stored (a study's dataset cache, a copied directory).
    """
    labels: dict[str, dict[str, str]] = {}
    keys: dict[str, tuple[int, str]] = {}
    for i, (task, items) in enumerate(sources):
        source_labels = objective_class(objective).labels(task, items)
        if not source_labels:
            continue
        root = os.path.commonpath([os.path.dirname(p) for p in source_labels])
        for path, lab in source_labels.items():
            labels.setdefault(path, {}).update(lab)
            keys.setdefault(path, (i, os.path.relpath(path, root)))
    return {path: labels[path] for path in sorted(labels, key=keys.__getitem__)}


def stage_data_labels(cfg: RunConfig, s: int) -> tuple[dict, dict | None]:
    """(train labels, held-out labels or None) of a vision-pretrain stage that names its own `data`."""
    stage = cfg.train.stages[s]
    source = stage.data
    train = ordered_image_labels([load_source(source, f"train.stages.{s}.data", cfg.data.image)], stage.objective)
    if not train:
        raise UserError(
            f"train.stages.{s}.data: task {source.task!r} gives no {objective_class(stage.objective).learns_from} to pretrain on"
            f" (objective: {stage.objective})"
        )
    heldout = None
    if stage.heldout_split is not None and stage.heldout_split != source.split:
        held = source.model_copy(update={"split": stage.heldout_split, "limit": None})
        held_source = load_source(held, f"train.stages.{s}.heldout_split", cfg.data.image)
        heldout = ordered_image_labels([held_source], stage.objective)
    return train, heldout


def readable(labels: dict[str, dict], data, cfg: RunConfig) -> tuple[dict[str, dict], list[str]]:
    """The labelled images that decode, and the paths that did not (`data.on_bad_image: skip`, within
    `data.max_bad_fraction`); under `stop` the first unreadable image is a DataError naming it."""
    policy = BadImages(cfg.data, len(labels))
    for path in labels:
        try:
            data.image_array(path)
        except DataError as exc:
            if policy.policy != "skip":
                raise stop_error(exc) from None
            policy.add(path, path)
    return {p: v for p, v in labels.items() if p not in policy.skipped}, policy.paths


def run_vision_stage(
    cfg: RunConfig,
    s: int,
    vision,
    data,
    default_sources,
    device,
    bar,
    study_cache: Path | None = None,
    write_cache: bool = True,
) -> dict:
    """Run vision-pretrain stage `s` on `vision` in place, or load its result from the cache.

    A stage with its own `data` is cached under `$VLMLAB_CACHE/vision-pretrain` (the tower depends on
    that set and the recipe, not on the run), so `vlmlab pretrain-vision`, every study and every run
    share it; a stage on the run's training images is cached in the study's own cache, if any.
    `default_sources()` gives the run's (task, items) training sources, read only by a stage without `data`."""
    stage = cfg.train.stages[s]
    cache_dir = cache_root() / "vision-pretrain" if stage.data is not None else study_cache
    key = vision_cache.stage_key(cfg, s) if cache_dir is not None else None
    t0 = time.perf_counter()
    cached = vision_cache.load(cache_dir, key, vision) if key else None
    if cached is not None:
        return cached
    labels, heldout = (
        stage_data_labels(cfg, s)
        if stage.data is not None
        else (
            ordered_image_labels(default_sources(), stage.objective),
            None,
        )
    )
    data = data if data is not None else ImageArrays(cfg.data.image)
    labels, bad = readable(labels, data, cfg)
    if heldout:
        heldout, _ = readable(heldout, data, cfg)
    metrics = pretrain_vision(
        vision,
        data,
        labels,
        stage,
        cfg,
        stage_seed(own_seed(cfg, s), s),
        device,
        bar,
        heldout,
        stage_key=f"train.stages.{s}",
    )
    metrics["seconds"] = time.perf_counter() - t0
    metrics["images"] = len(labels)
    if bad:
        metrics["bad_images"] = bad
    if key and write_cache:
        vision_cache.store(cache_dir, key, vision, metrics)
    return metrics


def mean_top1(metrics: dict, prefix: str) -> float | None:
    values = [v for k, v in metrics.items() if k.startswith(prefix)]
    return float(np.mean(values)) if values else None
