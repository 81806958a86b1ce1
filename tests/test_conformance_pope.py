"""POPE against RUCAIBox/POPE evaluate.py (LLaVA's eval_pope.py applies the same rule), case by case.

The rule, by hand for each case: keep the text before the first '.', delete commas, split on single
spaces; the answer is "no" when one of the words is exactly `no`, `not` or `No`, else "yes".
"""

from __future__ import annotations

import json

import pytest

from vlmlab.metrics import pope_answer, pope_match, pope_summary


@pytest.mark.parametrize(
    "text, read_as",
    [
        ("Yes, there is a snowboard in the image.", "yes"),  # "Yes there is a snowboard in the image": no "no"
        ("No.", "no"),  # first sentence "No"
        ("no, there is not", "no"),  # commas deleted: words no / there / is / not
        ("There is no dog in the image.", "no"),
        ("Nope", "yes"),  # not one of the three words
        ("NO", "yes"),  # only `No` and `no` count, not `NO`
        ("Not at all.", "yes"),  # `Not` is not `not`
        ("I do not know", "no"),
        ("yes. no.", "yes"),  # only the first sentence counts
        ("no.yes", "no"),
        ("Yes\nNo", "yes"),  # split on spaces only: one word "Yes\nNo"
        ("", "yes"),  # nothing said reads as yes
        ("yes", "yes"),
        ("no", "no"),
    ],
)
def test_pope_reads_answers_as_the_official_script(text, read_as):
    assert pope_answer(text) == read_as
    assert pope_match(text, read_as) == 1.0 and pope_match(text, {"yes": "no", "no": "yes"}[read_as]) == 0.0


def test_pope_summary_by_hand():
    # predictions read as: yes, yes, no, yes, no, no; labels: yes, no, no, yes, yes, no
    # TP = 2 (1st, 4th), FP = 1 (2nd), TN = 2 (3rd, 6th), FN = 1 (5th)
    # accuracy 4/6, precision 2/3, recall 2/3, F1 2/3, yes ratio 3/6
    predictions = ["Yes.", "yes, it is", "No", "There is a cat.", "not sure", "no"]
    labels = ["yes", "no", "no", "yes", "yes", "no"]
    assert pope_summary(predictions, labels) == pytest.approx(
        {"accuracy": 4 / 6, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "yes_ratio": 0.5}
    )


def test_pope_task_reports_its_metrics_per_variant_and_reads_json_arrays(tmp_path):
    from vlmlab.data.eval_mode import CLEAN
    from vlmlab.evaluation.records import record, summarize
    from vlmlab.registry import TASKS

    root = tmp_path / "pope"
    (root / "val2014").mkdir(parents=True)
    (root / "val2014" / "a.jpg").write_bytes(b"")
    lines = [
        {"question_id": i, "image": "a.jpg", "text": f"Is there a {o}?", "label": lab}
        for i, (o, lab) in enumerate([("cat", "yes"), ("dog", "no")], start=1)
    ]
    (root / "coco_pope_random.json").write_text("\n".join(json.dumps(r) for r in lines))  # JSON lines, as released
    (root / "coco_pope_popular.json").write_text(json.dumps(lines))  # one JSON array (SEEM-based and later files)
    task = TASKS.get("pope")()
    items = task.load("test", path=str(root))
    assert [(it.category, it.item_id) for it in items] == [
        ("random", "random-1"),
        ("random", "random-2"),
        ("popular", "popular-1"),
        ("popular", "popular-2"),
    ]
    answers = ["Yes, there is.", "No.", "There is no cat.", "Yes."]  # random: both right; popular: both wrong
    import pandas as pd

    records = pd.DataFrame([record(it, task, a, CLEAN) for it, a in zip(items, answers)])
    metrics = summarize(records, {"pope": task})
    assert metrics["per_category"]["pope/random"]["accuracy"] == 1.0
    assert metrics["per_category"]["pope/popular"]["accuracy"] == 0.0
    entry = metrics["tasks"]["pope"]
    assert entry["metric"] == "pope_yes_no" and "POPE evaluate.py" in entry["rule"]
    # popular: read as no (label yes) and yes (label no): TP 0, FP 1, FN 1 -> precision = recall = F1 = 0
    assert entry["summary_per_category"]["popular"] == {
        "accuracy": 0.0,
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "yes_ratio": 0.5,
    }
    assert entry["summary_per_category"]["random"]["f1"] == 1.0


def test_llava_question_files_give_llavas_prompts(tmp_path):
    """LLaVA-1.5's evaluation layout: llava_pope_test.jsonl's `text` is asked, matched per variant and question id."""
    from vlmlab.config import DataSource
    from vlmlab.data.sources import load_source
    from vlmlab.errors import DataError

    root = tmp_path / "pope"
    (root / "val2014").mkdir(parents=True)
    (root / "val2014" / "a.jpg").write_bytes(b"")
    for variant in ("random", "popular"):
        (root / f"coco_pope_{variant}.json").write_text(
            json.dumps({"question_id": 1, "image": "a.jpg", "text": "Is there a cat in the image?", "label": "yes"})
        )
    suffix = "\nAnswer the question using a single word or phrase."
    questions = tmp_path / "llava_pope_test.jsonl"
    questions.write_text(
        "\n".join(
            json.dumps({"question_id": 1, "image": "a.jpg", "category": v, "text": f"Is there a cat ({v})?{suffix}"})
            for v in ("random", "popular")
        )
    )
    source = DataSource(task="pope", split="test", path=str(root), prompts=str(questions))
    _, items = load_source(source, "data.eval.0")
    assert [it.question for it in items] == [f"Is there a cat (random)?{suffix}", f"Is there a cat (popular)?{suffix}"]
    questions.write_text(json.dumps({"question_id": 1, "category": "random", "text": "only one"}))
    with pytest.raises(DataError, match=r"no prompt for 1 of 2 items \(popular-1\) \[data.eval.0.prompts\]"):
        load_source(source, "data.eval.0")
