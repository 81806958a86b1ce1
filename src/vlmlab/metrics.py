"""Answer normalization and scoring (the official VQA normalization: punctuation, numbers, articles)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vlmlab.data.items import VQAItem

_CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hes": "he's",
    "im": "i'm",
    "isnt": "isn't",
    "itd": "it'd",
    "itll": "it'll",
    "ive": "i've",
    "lets": "let's",
    "shouldnt": "shouldn't",
    "thats": "that's",
    "theres": "there's",
    "theyre": "they're",
    "theyve": "they've",
    "wasnt": "wasn't",
    "werent": "weren't",
    "whats": "what's",
    "wheres": "where's",
    "whos": "who's",
    "wont": "won't",
    "wouldnt": "wouldn't",
    "youre": "you're",
    "youve": "you've",
}
_NUMBERS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _strip_punctuation(text: str) -> str:
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or re.search(_COMMA_STRIP, text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def normalize_answer(text: str) -> str:
    """Lower-case, strip punctuation, number words -> digits, drop articles, fix contractions."""
    text = text.replace("\n", " ").replace("\t", " ").strip().lower()
    text = _strip_punctuation(text)
    words = []
    for word in text.split():
        word = _NUMBERS.get(word, word)
        if word in _ARTICLES:
            continue
        words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


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


def exact_match(prediction: str, answer: str) -> float:
    """1.0 if the normalized prediction equals the normalized answer, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(answer))


def vqa_accuracy(prediction: str, human_answers: list[str]) -> float:
    """The official VQA accuracy: min(#matching humans / 3, 1), averaged over the leave-one-out
    subsets of the human answers (10 subsets of 9 for VQAv2), after the official normalization."""
    if not human_answers:
        raise ValueError("vqa_accuracy needs at least one human answer")
    pred = normalize_answer(prediction)
    gold = [normalize_answer(a) for a in human_answers]
    if len(gold) == 1:
        return float(pred == gold[0])
    scores = []
    for i in range(len(gold)):
        others = gold[:i] + gold[i + 1 :]
        scores.append(min(sum(g == pred for g in others) / 3.0, 1.0))
    return sum(scores) / len(scores)


_NUMBER = r"-?\d+(?:\.\d+)?"
_BOX = re.compile(rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]")


def parse_box(text: str) -> list[float] | None:
    """The first `[x1, y1, x2, y2]` in `text` as floats, or None if there is none (a format error)."""
    match = _BOX.search(text)
    if match is None:
        return None
    x1, y1, x2, y2 = (float(v) for v in match.groups())
    return [x1, y1, x2, y2]


def box_iou(box_a: list[float], box_b: list[float]) -> float:
    """Intersection over union of two `[x1, y1, x2, y2]` boxes; degenerate (zero-area) unions give 0."""
    ax1, ay1, ax2, ay2 = (
        min(box_a[0], box_a[2]),
        min(box_a[1], box_a[3]),
        max(box_a[0], box_a[2]),
        max(box_a[1], box_a[3]),
    )
    bx1, by1, bx2, by2 = (
        min(box_b[0], box_b[2]),
        min(box_b[1], box_b[3]),
        max(box_b[0], box_b[2]),
        max(box_b[1], box_b[3]),
    )
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def box_hit(prediction: str, answer: str, threshold: float = 0.5) -> float:
    """1.0 if the predicted box text overlaps the gold box text with IoU >= threshold; an unparsable
    prediction scores 0 (it counts as a format error)."""
    predicted, gold = parse_box(prediction), parse_box(answer)
    if predicted is None or gold is None:
        return 0.0
    return float(box_iou(predicted, gold) >= threshold)


def random_box_baseline(gold_boxes: list[list[float]], seed: int = 0, draws: int = 20, threshold: float = 0.5) -> float:
    """Acc@IoU≥threshold of boxes with uniformly random corners in 0–99 (mean over `draws` seeded draws):
    the grounding score of a model that outputs well-formed boxes but has not looked at the image."""
    import numpy as np

    rng = np.random.default_rng(seed)
    hits = []
    for _ in range(draws):
        for gold in gold_boxes:
            x = np.sort(rng.integers(0, 100, 2))
            y = np.sort(rng.integers(0, 100, 2))
            hits.append(box_iou([x[0], y[0], x[1], y[1]], gold) >= threshold)
    return float(np.mean(hits)) if hits else float("nan")


def yes_no_f1(predictions: list[str], answers: list[str]) -> dict[str, float]:
    """POPE-style summary of yes/no answers, "yes" being the positive class: accuracy, precision,
    recall, f1 and yes_ratio (the share of "yes" predictions). A prediction counts as "yes" when its
    first normalized word is "yes"; anything else counts as "no"."""
    if len(predictions) != len(answers) or not answers:
        raise ValueError("yes_no_f1 needs as many predictions as answers, at least one")

    def says_yes(text: str) -> bool:
        return normalize_answer(text).split(" ")[0] == "yes"

    pred = [says_yes(p) for p in predictions]
    gold = [says_yes(a) for a in answers]
    tp = sum(p and g for p, g in zip(pred, gold))
    precision = tp / sum(pred) if any(pred) else 0.0
    recall = tp / sum(gold) if any(gold) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = sum(p == g for p, g in zip(pred, gold)) / len(gold)
    return {
        "accuracy": accuracy,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": sum(pred) / len(pred),
    }


def _human_vqa_accuracy(prediction: str, item: VQAItem) -> float:
    return vqa_accuracy(prediction, list(item.answers) or [item.answer])


# Metrics a declarative task may name: (prediction, item) -> score in [0, 1]. The item is a VQAItem:
# single-answer metrics read `item.answer`; `vqa_accuracy` reads the human answers `item.answers`
# (falling back to `item.answer` alone, i.e. exact match, for items that have none).
METRICS: dict[str, Callable[[str, VQAItem], float]] = {
    "exact_match": lambda prediction, item: exact_match(prediction, item.answer),
    "box_iou@0.5": lambda prediction, item: box_hit(prediction, item.answer),
    "vqa_accuracy": _human_vqa_accuracy,
}
