"""`vision-pretrain` stage: image-attribute classification of the vision tower (an ImageNet analogue).

The tower's tokens are mean-pooled into one linear head per attribute (e.g. shape, colour); the heads
are thrown away after the stage. Labels come from the task (`Task.image_labels`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlmlab.config import RunConfig, StageConfig
from vlmlab.data.dataset import VQADataset
from vlmlab.data.images import normalize
from vlmlab.errors import UserError
from vlmlab.models.vision.base import VisionEncoder
from vlmlab.train.optim import schedule

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


def _augment(batch: np.ndarray, kinds: list[str], rng: np.random.Generator) -> np.ndarray:
    out = batch.copy()
    if "hflip" in kinds:
        flip = rng.random(len(out)) < 0.5
        out[flip] = out[flip, :, ::-1]
    if "rot90" in kinds:
        turns = rng.integers(0, 4, len(out))
        for i, k in enumerate(turns):
            out[i] = np.rot90(out[i], k, axes=(0, 1))
    return out


def pretrain_vision(
    vision: VisionEncoder, data: VQADataset, image_labels: dict[str, dict[str, str]], stage: StageConfig,
    cfg: RunConfig, seed: int, device: torch.device, bar,
) -> dict[str, float]:
    """Train `vision` (in place) to classify each image's attributes; returns final train accuracies."""
    if not image_labels:
        raise UserError("train.stages: vision-pretrain found no image-level labels in the training task")
    paths, classes, table = label_table(image_labels)
    images = np.stack([data.image_array(p) for p in paths])
    heads = nn.ModuleDict({a: nn.Linear(vision.embed_dim, len(c)) for a, c in classes.items()}).to(device)
    params = [p for p in vision.parameters()] + list(heads.parameters())
    for p in vision.parameters():
        p.requires_grad_(True)
    lr = stage.lr["vision"]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.train.weight_decay, betas=cfg.train.betas)
    batch_size = stage.batch_size or cfg.train.batch_size
    per_epoch = math.ceil(len(paths) / batch_size)
    total = stage.max_steps or max(1, math.ceil(stage.epochs * per_epoch))
    factor = schedule(cfg.train.schedule, int(cfg.train.warmup_ratio * total), total)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    labels = torch.from_numpy(table)
    correct = np.zeros(len(classes))
    seen = np.zeros(len(classes))
    job = bar.add_task(f"{stage.name}", total=total, info="")
    vision.train()
    step = 0
    while step < total:
        perm = torch.randperm(len(paths), generator=gen)
        for k in range(per_epoch):
            if step >= total:
                break
            idx = perm[k * batch_size : (k + 1) * batch_size]
            pixels = normalize(_augment(images[idx.numpy()], stage.augment, rng), cfg.data.image.mean, cfg.data.image.std)
            pooled = vision(torch.from_numpy(pixels).to(device)).tokens.mean(1)
            target = labels[idx].to(device)
            loss = 0.0
            for j, (attr, head) in enumerate(heads.items()):
                logits = head(pooled)
                loss = loss + F.cross_entropy(logits, target[:, j], ignore_index=IGNORE)
                if step >= total - per_epoch:  # accuracy over the last epoch's batches
                    known = target[:, j] != IGNORE
                    correct[j] += int((logits.argmax(1) == target[:, j])[known].sum())
                    seen[j] += int(known.sum())
            for g in opt.param_groups:
                g["lr"] = lr * factor(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
            opt.step()
            step += 1
            bar.update(job, completed=step, info=f"loss {float(loss.detach()):.3f}")
    return {f"train_top1/{a}": float(correct[j] / max(seen[j], 1)) for j, a in enumerate(heads)}
