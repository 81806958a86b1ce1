"""Scores per item and the accuracy over items; each benchmark's metric is its official evaluator's, item by item.

`METRICS` maps the name a task uses (and a task YAML may name) to the per-item score and to the tool and
version it follows (`METRIC_SOURCES`), which `metrics.json` records next to every task's accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vlmlab.metrics.answers import (
    VQA_CONVENTIONS,
    digits_and_articles,
    evalai_normalize,
    exact_match,
    gqa_match,
    normalize_answer,
    strip_punctuation,
    textvqa_accuracy,
    vizwiz_accuracy,
    vqa_accuracy,
)
from vlmlab.metrics.boxes import box_hit, box_iou, parse_box, pixel_box_hit, random_box_baseline
from vlmlab.metrics.pope import pope_answer, pope_match, pope_summary

if TYPE_CHECKING:
    from vlmlab.data.items import VQAItem

__all__ = [
    "METRICS",
    "METRIC_SOURCES",
    "VQA_CONVENTIONS",
    "accuracy",
    "accuracy_by",
    "box_hit",
    "box_iou",
    "digits_and_articles",
    "evalai_normalize",
    "exact_match",
    "gqa_match",
    "normalize_answer",
    "parse_box",
    "pixel_box_hit",
    "pope_answer",
    "pope_match",
    "pope_summary",
    "random_box_baseline",
    "strip_punctuation",
    "textvqa_accuracy",
    "vizwiz_accuracy",
    "vqa_accuracy",
]


def accuracy(records, column: str = "score") -> float:
    """The accuracy vlmlab reports, everywhere: the mean of the per-item `score` over these records (NaN for none).

    `score` is the task's own metric per item: 1/0 for exact match, VQAv2's soft human-agreement score
    (0, 1/3, 2/3, 1 …), and IoU >= 0.5 for boxes. `correct` (score == 1, full credit) is the binary view
    that calibration and question-overlap statistics need; it is not called accuracy."""
    values = records[column]
    return float(values.mean()) if len(values) else float("nan")


def accuracy_by(records, keys: list[str]):
    """`accuracy` per group of `keys` (a Series indexed by them, groups in order of appearance)."""
    return records.groupby(keys, sort=False)["score"].mean()


def _humans(item: VQAItem) -> list[str]:
    return list(item.answers) or [item.answer]


def _box(prediction: str, item: VQAItem) -> float:
    """Acc@IoU>=0.5: in the original image's pixels when the item knows them (a benchmark with pixel boxes),
    else in the processed image's 0-99 grid (vlmlab's generated sets)."""
    if item.box is not None and item.image_size is not None and item.frame is not None:
        return pixel_box_hit(prediction, item.box, item.image_size, item.frame)
    return box_hit(prediction, item.answer)


# (prediction, item) -> score in [0, 1]; the item is a VQAItem (single-answer metrics read `item.answer`,
# VQA accuracy the human answers `item.answers`, falling back to `item.answer` alone)
METRICS: dict[str, Callable[[str, VQAItem], float]] = {
    "exact_match": lambda prediction, item: exact_match(prediction, item.answer),
    "vqa_accuracy": lambda prediction, item: vqa_accuracy(prediction, _humans(item), "official-2021"),
    "vqa_accuracy_2016": lambda prediction, item: vqa_accuracy(prediction, _humans(item), "official-2016"),
    "vizwiz_accuracy": lambda prediction, item: vizwiz_accuracy(prediction, _humans(item)),
    "textvqa_accuracy": lambda prediction, item: textvqa_accuracy(prediction, _humans(item)),
    "gqa_exact": lambda prediction, item: gqa_match(prediction, item.answer),
    "pope_yes_no": lambda prediction, item: pope_match(prediction, item.answer),
    "box_iou@0.5": _box,
}
METRIC_SOURCES = {
    "exact_match": "vlmlab: equal after the VQA answer processing of GT-Vision-Lab/VQA vqaEval.py (both sides)",
    "vqa_accuracy": "VQA accuracy, " + VQA_CONVENTIONS["official-2021"],
    "vqa_accuracy_2016": "VQA accuracy, " + VQA_CONVENTIONS["official-2016"],
    "vizwiz_accuracy": "VizWiz accuracy, the VizWiz evaluation API (Qing Li's vqaEval.py, vizwiz.org): prediction always "
    "normalized (2015 contraction table), human answers compared as given, leave-one-out",
    "textvqa_accuracy": "TextVQA accuracy, LLaVA llava/eval/eval_textvqa.py + m4c_evaluator.py (EvalAI answer processor "
    "on prediction and human answers, leave-one-out)",
    "gqa_exact": "GQA eval.py after LLaVA scripts/convert_gqa_for_eval.py: prediction.rstrip('.').lower() == answer",
    "pope_yes_no": "RUCAIBox/POPE evaluate.py (= LLaVA llava/eval/eval_pope.py): 'no' if the first sentence has the "
    "word no/not/No, else 'yes'; equal to the label",
    "box_iou@0.5": "Acc@IoU>=0.5: in original-image pixels through the inverse resize/letterbox when the benchmark "
    "gives pixel boxes (RefCOCO/+/g), else in the processed image's 0-99 grid (shapes-world)",
}
