"""POPE's yes/no reading of an answer and its summary metrics, as the POPE repository scores them.

Follows RUCAIBox/POPE `evaluate.py` (HEAD 3df3ba1, 2024-03-25; LLaVA's `llava/eval/eval_pope.py` applies the
same rule):
only the text before the first '.' counts, commas are removed, the rest is split on single spaces, and the
answer is "no" when one of those words is exactly `no`, `not` or `No`; anything else is "yes". "yes" is the
positive class of precision, recall and F1.
"""

from __future__ import annotations

NO_WORDS = frozenset({"no", "not", "No"})


def pope_answer(text: str) -> str:
    """`"yes"` or `"no"`: POPE's reading of a free-form answer."""
    first = text.split(".")[0] if "." in text else text
    return "no" if NO_WORDS & set(first.replace(",", "").split(" ")) else "yes"


def pope_match(prediction: str, label: str) -> float:
    """1.0 when POPE reads the prediction as the label (`yes` / `no`)."""
    return float(pope_answer(prediction) == label)


def pope_summary(predictions: list[str], labels: list[str]) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of "yes", and the share of answers read as "yes" (POPE's yes ratio);
    precision, recall and F1 are 0 where their denominator is (the official script would divide by zero)."""
    if len(predictions) != len(labels) or not labels:
        raise ValueError("pope_summary needs as many predictions as labels, at least one")
    said_yes = [pope_answer(p) == "yes" for p in predictions]
    is_yes = [label == "yes" for label in labels]
    tp = sum(p and g for p, g in zip(said_yes, is_yes))
    fp = sum(p and not g for p, g in zip(said_yes, is_yes))
    fn = sum(g and not p for p, g in zip(said_yes, is_yes))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": sum(p == g for p, g in zip(said_yes, is_yes)) / len(labels),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": sum(said_yes) / len(said_yes),
    }
