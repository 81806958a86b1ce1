"""The `dense` vision-pretrain objective: every token learns what occupies its patch and that object's box.

The tiny analogue of the detection (COCO) pretraining that study B compares with classification pretraining:
per token, one linear head per object attribute (e.g. colour, shape; class 0 = background) and one box head
that regresses the box of the object the token lies on (x1, y1, x2, y2 in 0-1 of the processed image). Labels
come from the task's objects (`Task.image_objects`, exact boxes in shapes-world), projected through the run's
resize or letterbox, and rasterized onto the tower's token grid:

- a token belongs to the object that covers most of its patch, if that object covers at least a quarter of
  the patch or the patch holds the object's box centre; otherwise the token is background. An object left
  with no token (two centres in one coarse patch) takes the patch it covers most whose owner keeps another,
  so every object owns a token wherever the grid allows it;
- the loss is the attributes' cross-entropy over all tokens plus `BOX_WEIGHT` x the L1 box error over object
  tokens (DETR's weighting of L1 against classification);
- an object's predicted box is the mean of its tokens' boxes; held-out images report its IoU with the true box.

Flips and 90-degree turns move the labels with the pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlmlab.config import ImageConfig
from vlmlab.data.images import normalize, project_box
from vlmlab.metrics.boxes import box_iou

BOX_WEIGHT = 5.0
MIN_COVER = 0.25  # share of a patch an object must cover to own it (unless the patch holds its box centre)
IGNORE = -100


def object_attributes(image_objects: dict[str, dict]) -> dict[str, list[str]]:
    """Classes per attribute over every object (sorted); the heads predict index 0 for background."""
    names = sorted({k for scene in image_objects.values() for o in scene["objects"] for k in o if k != "box"})
    return {a: sorted({str(o[a]) for s in image_objects.values() for o in s["objects"] if a in o}) for a in names}


def rasterize(scene: dict, grid: tuple[int, int], image: ImageConfig) -> tuple[np.ndarray, list[list[float]]]:
    """(owner per token (rows, cols): the object's index or -1 for background, object boxes in 0-1 units of the
    processed image) for one image `{"size": (width, height), "objects": [{"box": pixel box, ...}]}`."""
    width, height = scene["size"]
    boxes = [
        [v / 100 for v in project_box(o["box"], width, height, image.size, image.geometry)] for o in scene["objects"]
    ]
    rows, cols = grid
    cover = np.zeros((rows, cols, len(boxes)))  # share of each patch each object's box covers
    centre = np.zeros((rows, cols, len(boxes)), dtype=bool)
    for k, (bx1, by1, bx2, by2) in enumerate(boxes):
        xs = np.clip(np.minimum(np.arange(1, cols + 1) / cols, bx2) - np.maximum(np.arange(cols) / cols, bx1), 0, None)
        ys = np.clip(np.minimum(np.arange(1, rows + 1) / rows, by2) - np.maximum(np.arange(rows) / rows, by1), 0, None)
        cover[:, :, k] = np.outer(ys * rows, xs * cols)
        r, c = min(int((by1 + by2) / 2 * rows), rows - 1), min(int((bx1 + bx2) / 2 * cols), cols - 1)
        centre[r, c, k] = True
    owner = np.full((rows, cols), -1, dtype=np.int64)
    if not boxes:
        return owner, boxes
    eligible = np.where((cover >= MIN_COVER) | centre, cover, 0.0)
    best = eligible.argmax(-1)
    owner[eligible.max(-1) > 0] = best[eligible.max(-1) > 0]
    for k in np.argsort([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes], kind="stable"):  # smallest first
        if (owner == k).any():
            continue
        # an object crowded out of its centre patch takes the patch it covers most among those whose owner
        # keeps another patch (or that nobody owns)
        counts = np.bincount(owner[owner >= 0], minlength=len(boxes))
        free = (owner < 0) | (counts[np.maximum(owner, 0)] > 1)
        options = np.where(free & (cover[:, :, k] > 0), cover[:, :, k], 0.0)
        if options.max() > 0:
            owner[np.unravel_index(options.argmax(), options.shape)] = k
    return owner, boxes


class DenseTargets:
    """Per-token targets of a set of images: attribute classes (n, rows, cols, attributes; 0 = background),
    boxes (n, rows, cols, 4; NaN on background) and owning object (n, rows, cols; -1 = background)."""

    def __init__(self, paths: list[str], image_objects: dict[str, dict], grid, image: ImageConfig, classes):
        rows, cols = grid
        n, attrs = len(paths), list(classes)
        self.classes = classes
        self.attrs = np.zeros((n, rows, cols, len(attrs)), dtype=np.int64)
        self.boxes = np.full((n, rows, cols, 4), np.nan, dtype=np.float32)
        self.owner = np.full((n, rows, cols), -1, dtype=np.int64)
        for i, path in enumerate(paths):
            scene = image_objects[path]
            owner, boxes = rasterize(scene, grid, image)
            self.owner[i] = owner
            for k, obj in enumerate(scene["objects"]):
                mask = owner == k
                self.boxes[i][mask] = boxes[k]
                for j, a in enumerate(attrs):
                    if a in obj and str(obj[a]) in classes[a]:
                        self.attrs[i][mask, j] = classes[a].index(str(obj[a])) + 1
                    else:
                        self.attrs[i][mask, j] = IGNORE

    def batch(self, idx: np.ndarray, flips: np.ndarray | None, turns: np.ndarray | None):
        """The targets of images `idx`, moved as `_augment` moved their pixels (flips, then turns)."""
        attrs, boxes, owner = self.attrs[idx].copy(), self.boxes[idx].copy(), self.owner[idx].copy()
        for i in range(len(idx)):
            if flips is not None and flips[i]:
                attrs[i], boxes[i], owner[i] = attrs[i][:, ::-1], boxes[i][:, ::-1], owner[i][:, ::-1]
                boxes[i] = boxes[i][..., [2, 1, 0, 3]] * [-1, 1, -1, 1] + [1, 0, 1, 0]
            if turns is not None and turns[i]:
                for _ in range(int(turns[i])):  # counter-clockwise, as np.rot90: (x, y) -> (y, 1 - x)
                    attrs[i], owner[i] = np.rot90(attrs[i]), np.rot90(owner[i])
                    boxes[i] = np.rot90(boxes[i])[..., [1, 2, 3, 0]] * [1, -1, 1, -1] + [0, 1, 0, 1]
        return torch.from_numpy(np.ascontiguousarray(attrs)), torch.from_numpy(np.ascontiguousarray(boxes)), owner


class DenseHeads(nn.Module):
    """One linear classifier per attribute (background + its classes) and a box regressor, applied per token."""

    def __init__(self, dim: int, classes: dict[str, list[str]]):
        super().__init__()
        self.attrs = nn.ModuleDict({a: nn.Linear(dim, len(c) + 1) for a, c in classes.items()})
        self.box = nn.Linear(dim, 4)

    def forward(self, tokens: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return {a: head(tokens) for a, head in self.attrs.items()}, torch.sigmoid(self.box(tokens))


def grid_tokens(features) -> torch.Tensor:
    """The features' patch tokens as (B, rows, cols, D) (a leading CLS token, if any, is left out)."""
    rows, cols = features.grid
    tokens = features.tokens[:, -rows * cols :]
    return tokens.reshape(tokens.shape[0], rows, cols, tokens.shape[-1])


class DenseStats:
    """Running token top-1 per attribute (over object tokens) and per-object box IoU."""

    def __init__(self, attrs: list[str]):
        self.correct, self.seen = dict.fromkeys(attrs, 0), dict.fromkeys(attrs, 0)
        self.ious: list[float] = []

    def add(self, logits, boxes_pred, attrs_t, boxes_t, owner: np.ndarray) -> None:
        """One batch: predictions, and the (moved) targets they answer."""
        objects = attrs_t[..., 0] != 0
        for j, (a, lg) in enumerate(logits.items()):
            known = objects & (attrs_t[..., j] != IGNORE)
            self.correct[a] += int((lg.argmax(-1) == attrs_t[..., j])[known].sum())
            self.seen[a] += int(known.sum())
        pred, true = boxes_pred.detach().float().cpu().numpy(), boxes_t.cpu().numpy()
        for i in range(len(owner)):
            for k in np.unique(owner[i][owner[i] >= 0]):
                mask = owner[i] == k
                self.ious.append(box_iou(pred[i][mask].mean(0).tolist(), true[i][mask][0].tolist()))

    def metrics(self, prefix: str) -> dict[str, float]:
        out = {f"{prefix}_top1/{a}": self.correct[a] / self.seen[a] for a in self.correct if self.seen[a]}
        if self.ious:
            out[f"{prefix}_box_iou"] = float(np.mean(self.ious))
            out[f"{prefix}_box_acc50"] = float(np.mean(np.asarray(self.ious) >= 0.5))
        return out


class DenseObjective:
    """The `dense` objective for `pretrain_vision`: targets, heads, loss and held-out scores."""

    name = "dense"
    learns_from = "objects with boxes"

    @staticmethod
    def labels(task, items) -> dict[str, dict]:
        return task.image_objects(items)

    def __init__(self, vision, paths, image_objects, image: ImageConfig, device):
        self.grid = vision.grid
        self.image = image
        self.classes = object_attributes(image_objects)
        self.targets = DenseTargets(paths, image_objects, self.grid, image, self.classes)
        self.heads = DenseHeads(vision.embed_dim, self.classes).to(device)
        self.stats = DenseStats(list(self.classes))
        self.device = device

    def loss(self, features, idx: np.ndarray, flips, turns, record: bool) -> torch.Tensor:
        attrs_t, boxes_t, owner = self.targets.batch(idx, flips, turns)
        attrs_t, boxes_t = attrs_t.to(self.device), boxes_t.to(self.device)
        logits, boxes = self.heads(grid_tokens(features))
        loss = 0.0
        for j, lg in enumerate(logits.values()):
            loss = loss + F.cross_entropy(lg.flatten(0, 2), attrs_t[..., j].flatten(), ignore_index=IGNORE)
        objects = ~torch.isnan(boxes_t[..., 0])
        if objects.any():
            loss = loss + BOX_WEIGHT * F.l1_loss(boxes[objects], boxes_t[objects])
        if record:
            self.stats.add(logits, boxes, attrs_t, boxes_t, owner)
        return loss

    def train_metrics(self) -> dict[str, float]:
        return self.stats.metrics("train")

    @torch.no_grad()
    def heldout(self, vision, data, heldout_objects: dict[str, dict], cfg, batch_size: int) -> dict[str, float]:
        vision.eval()
        paths = list(heldout_objects)
        targets = DenseTargets(paths, heldout_objects, self.grid, self.image, self.classes)
        stats = DenseStats(list(self.classes))
        for start in range(0, len(paths), batch_size):
            idx = np.arange(start, min(start + batch_size, len(paths)))
            pixels = normalize(
                np.stack([data.image_array(paths[i]) for i in idx]), cfg.data.image.mean, cfg.data.image.std
            )
            logits, boxes = self.heads(grid_tokens(vision(torch.from_numpy(pixels).to(self.device))))
            attrs_t, boxes_t, owner = targets.batch(idx, None, None)
            stats.add(logits, boxes, attrs_t.to(self.device), boxes_t, owner)
        vision.train()
        return stats.metrics("heldout")
