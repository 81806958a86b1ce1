"""VQA accuracy (VQAv2, and the VizWiz/TextVQA rules built on it) against GT-Vision-Lab/VQA vqaEval.py, case by case.

Each expected score is worked out by hand from the official rule, in the comment beside the case:
leave each of the ten human answers out in turn, score min(1, matching remaining answers / 3), average.
`official-2021` (the current script, commit a013f00): answers and prediction are only trimmed, unless the
ten humans disagree, in which case both go through processPunctuation + processDigitArticle.
`official-2016` (commit 458a8b2): the prediction is always processed; the answers lose punctuation only
when they disagree.
"""

from __future__ import annotations

import pytest

from vlmlab.metrics import digits_and_articles, normalize_answer, strip_punctuation, vqa_accuracy

TEN = 10


@pytest.mark.parametrize(
    "prediction, humans, score_2021, score_2016",
    [
        # all ten agree: 2021 compares the trimmed prediction as it is -> only an exact string match scores
        ("frisbee", ["frisbee"] * TEN, 1.0, 1.0),
        ("Frisbee", ["frisbee"] * TEN, 0.0, 1.0),  # 2016 lower-cases the prediction -> 9 matches each -> 1
        ("a frisbee", ["frisbee"] * TEN, 0.0, 1.0),  # 2016 drops the article
        ("No", ["no"] * TEN, 0.0, 1.0),
        ("Two", ["2"] * TEN, 0.0, 1.0),  # 2016 maps two -> 2
        ("  frisbee\n", ["frisbee"] * TEN, 1.0, 1.0),  # both trim whitespace and newlines
        ("frisbee.", ["frisbee"] * TEN, 0.0, 1.0),  # 2021: "frisbee." != "frisbee"; 2016 strips the period
        # humans disagree: both versions normalize the prediction; 2021 normalizes the answers too
        # 3 of 10 say "red" (7 "blue"): leaving a "red" out keeps 2 -> 2/3 (x3); leaving a "blue" out keeps 3 -> 1 (x7)
        # -> (3 * 2/3 + 7) / 10 = 0.9
        ("Red.", ["red"] * 3 + ["blue"] * 7, 0.9, 0.9),
        # 2 of 10: leaving one of them out keeps 1 -> 1/3 (x2); else 2 -> 2/3 (x8) -> (2/3 + 16/3) / 10 = 0.6
        ("red", ["red", "red"] + ["blue"] * 8, 0.6, 0.6),
        # answers written "Two" (x4) and "2" (x6): 2021 normalizes answers to "2" (10 matches -> 1.0);
        # 2016 only strips punctuation from answers, so "2" matches the six -> min(1, 5/3 or 6/3) = 1.0
        ("two", ["Two"] * 4 + ["2"] * 6, 1.0, 1.0),
        # "the dog" x3 vs "dog" x7 against "dog": 2021 -> all ten become "dog" -> 1.0;
        # 2016 answers keep their article ("the dog" stays), prediction "dog" matches the 7 -> 1.0
        ("dog", ["the dog"] * 3 + ["dog"] * 7, 1.0, 1.0),
        # "the dog" x8, "dog" x2 against "the dog": 2021 -> all "dog" -> 1.0; 2016: prediction -> "dog",
        # answers keep "the dog" -> matches only the two "dog": leaving one out keeps 1 -> 1/3 (x2), else 2/3 (x8)
        # -> (2/3 + 16/3) / 10 = 0.6
        ("the dog", ["the dog"] * 8 + ["dog"] * 2, 1.0, 0.6),
        ("green", ["red"] * TEN, 0.0, 0.0),
    ],
)
def test_vqa_accuracy_follows_each_official_version(prediction, humans, score_2021, score_2016):
    assert vqa_accuracy(prediction, humans) == pytest.approx(score_2021)  # official-2021 is the default
    assert vqa_accuracy(prediction, humans, "official-2016") == pytest.approx(score_2016)


def test_punctuation_rules_of_the_official_script():
    # a mark touching a space is deleted, elsewhere it becomes a space: "t-shirt" -> "t shirt"; "yes , no" -> "yes  no"
    assert strip_punctuation("t-shirt") == "t shirt" and strip_punctuation("yes , no") == "yes  no"
    # a digit-comma-digit run anywhere deletes every listed mark: "1,000-2" -> "10002"
    assert strip_punctuation("1,000-2") == "10002"
    # periods go unless a digit follows: "3.5" stays, "end." loses it; apostrophes and colons are not listed
    assert strip_punctuation("3.5 end.") == "3.5 end" and strip_punctuation("it's 5:30") == "it's 5:30"
    # at most 32 periods are removed (re.UNICODE is passed where sub() takes its count)
    assert strip_punctuation("." * 40) == "." * 8
    # processDigitArticle: lower-case, number words, articles, the contraction table (no "im" entry)
    assert digits_and_articles("The THREE Dogs") == "3 dogs" and digits_and_articles("dont im") == "don't im"
    assert normalize_answer("\tA Cat!\n") == "cat"


def test_local_data_with_one_answer_is_exact_match_after_processing():
    # one gold answer cannot be left out (the official rule would give 0): vlmlab scores exact match
    assert vqa_accuracy("The Cat", ["cat"]) == 1.0 and vqa_accuracy("dog", ["cat"]) == 0.0
    with pytest.raises(ValueError, match="unknown VQA accuracy convention"):
        vqa_accuracy("x", ["x"], "2019")
