"""Box answers: parsing `[x1, y1, x2, y2]`, IoU, Acc@IoU in the processed frame or in the original image's pixels."""

from __future__ import annotations

import re

import numpy as np

from vlmlab.data.images import grid_to_units, unproject_box

_NUMBER = r"-?\d+(?:\.\d+)?"
_BOX = re.compile(rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]")


def parse_box(text: str) -> list[float] | None:
    """The first `[x1, y1, x2, y2]` in `text` as floats, or None if there is none (a format error)."""
    match = _BOX.search(text)
    if match is None:
        return None
    return [float(v) for v in match.groups()]


def box_iou(box_a: list[float], box_b: list[float]) -> float:
    """Intersection over union of two `[x1, y1, x2, y2]` boxes in continuous coordinates (corners in either order);
    a degenerate (zero-area) union gives 0."""
    ax1, ax2 = sorted((box_a[0], box_a[2]))
    ay1, ay2 = sorted((box_a[1], box_a[3]))
    bx1, bx2 = sorted((box_b[0], box_b[2]))
    by1, by2 = sorted((box_b[1], box_b[3]))
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def box_hit(prediction: str, answer: str, threshold: float = 0.5) -> float:
    """1.0 if the predicted box text overlaps the gold box text with IoU >= threshold, both in the 0-99 grid of the
    processed image; an unparsable prediction scores 0 (it counts as a format error)."""
    predicted, gold = parse_box(prediction), parse_box(answer)
    if predicted is None or gold is None:
        return 0.0
    return float(box_iou(predicted, gold) >= threshold)


def pixel_box_hit(
    prediction: str,
    gold: tuple[float, ...],
    image_size: tuple[int, int],
    frame: tuple[int, str],
    threshold: float = 0.5,
) -> float:
    """Acc@IoU>=threshold in the original image's pixels, as grounding benchmarks (RefCOCO/+/g) define it: the
    predicted 0-99 box is mapped back through the inverse of the run's resize or letterbox (`frame`: processed
    side, geometry) and compared with the gold pixel box. Continuous IoU (no +1 pixel) and >= 0.5, as TRI-ML
    vlm-evaluation's RefCOCO harness (d9f5896) and Qwen-VL's eval_mm/evaluate_grounding.py score; the refer
    toolkit itself has no IoU code. An unparsable prediction scores 0."""
    predicted = parse_box(prediction)
    if predicted is None:
        return 0.0
    width, height = image_size
    in_pixels = unproject_box(grid_to_units(predicted), width, height, frame[0], frame[1])
    return float(box_iou(in_pixels, list(gold)) >= threshold)


def random_box_baseline(gold_boxes: list[list[float]], seed: int = 0, draws: int = 20, threshold: float = 0.5) -> float:
    """Acc@IoU>=threshold of boxes with uniformly random corners in 0-99 (mean over `draws` seeded draws):
    the grounding score of a model that outputs well-formed boxes but has not looked at the image."""
    rng = np.random.default_rng(seed)
    hits = []
    for _ in range(draws):
        for gold in gold_boxes:
            x = np.sort(rng.integers(0, 100, 2))
            y = np.sort(rng.integers(0, 100, 2))
            hits.append(box_iou([x[0], y[0], x[1], y[1]], gold) >= threshold)
    return float(np.mean(hits)) if hits else float("nan")
