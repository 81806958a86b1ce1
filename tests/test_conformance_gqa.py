"""GQA against its eval.py after LLaVA's convert_gqa_for_eval.py: `prediction.rstrip('.').lower() == answer`."""

from __future__ import annotations

import pytest

from vlmlab.metrics import gqa_match


@pytest.mark.parametrize(
    "prediction, answer, score",
    [
        ("cup", "cup", 1.0),
        ("Cup.", "cup", 1.0),  # trailing period stripped, lower-cased
        ("CUP...", "cup", 1.0),  # every trailing period goes
        ("the cup", "cup", 0.0),  # articles are not dropped (vlmlab's old rule dropped them)
        ("two", "2", 0.0),  # number words are not mapped
        ("2", "2", 1.0),
        (" cup", "cup", 0.0),  # whitespace is not trimmed
        ("cup. ", "cup", 0.0),  # the trailing space stops rstrip('.')
        ("yes, it is", "yes", 0.0),
        ("left", "left", 1.0),
    ],
)
def test_gqa_exact_match_is_the_official_rule(prediction, answer, score):
    assert gqa_match(prediction, answer) == score
