"""VizWiz against its evaluation API (Qing Li's vqaEval.py), TextVQA against LLaVA-1.5's m4c_evaluator, case by case.

VizWiz, by hand: the prediction is trimmed, stripped of punctuation and normalized (lower-case, number words,
articles, the 2015 contraction table); the ten human answers are compared as given; leave-one-out.
TextVQA, by hand: prediction and answers go through EvalAI's processor (lower-case, delete `,` and `?`,
split `'s`, trim, punctuation, digits/articles, contractions); leave-one-out.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from vlmlab.metrics import evalai_normalize, textvqa_accuracy, vizwiz_accuracy
from vlmlab.registry import TASKS

UNANSWERABLE = ["unanswerable"] * 10


@pytest.mark.parametrize(
    "prediction, humans, score",
    [
        ("Unanswerable", UNANSWERABLE, 1.0),  # the prediction is normalized: "unanswerable" -> 9 matches -> 1
        ("unanswerable.", UNANSWERABLE, 1.0),
        ("I cannot tell", UNANSWERABLE, 0.0),
        # human answers are never normalized: "Red" written by 4 humans never matches the prediction "red";
        # 6 wrote "red": leaving a "red" out keeps 5 -> 1 (x6), leaving a "Red" out keeps 6 -> 1 (x4) -> 1.0
        ("Red", ["Red"] * 4 + ["red"] * 6, 1.0),
        # 2 wrote "red", 8 "Red": leave a "red" out -> 1 match -> 1/3 (x2); else 2 -> 2/3 (x8) -> 0.6
        ("red", ["red"] * 2 + ["Red"] * 8, 0.6),
        # the 2015 table spells "dont" with a typographic apostrophe: "dont" -> "don’t" != "don't"
        ("dont", ["don't"] * 10, 0.0),
        ("two", ["2"] * 10, 1.0),
    ],
)
def test_vizwiz_accuracy_is_the_vizwiz_apis(prediction, humans, score):
    assert vizwiz_accuracy(prediction, humans) == pytest.approx(score)


@pytest.mark.parametrize(
    "prediction, humans, score",
    [
        ("Coca-Cola", ["coca cola"] * 10, 1.0),  # "-" between letters becomes a space: "coca cola"
        ("STOP", ["stop"] * 3 + ["exit"] * 7, 0.9),  # both sides normalized: 3 of 10 -> (3 * 2/3 + 7) / 10
        ("john's", ["johns"] * 10, 0.0),  # "'s" is split off: "john 's" != "johns"
        ("1,000", ["1000"] * 10, 1.0),  # commas deleted
        ("what?", ["what"] * 10, 1.0),  # question marks deleted
        ("sign", ["a sign"] * 10, 1.0),  # articles dropped on both sides
        ("pepsi", ["coke"] * 10, 0.0),
    ],
)
def test_textvqa_accuracy_is_llavas_m4c_evaluator(prediction, humans, score):
    assert textvqa_accuracy(prediction, humans) == pytest.approx(score)


def test_evalai_processor_steps():
    assert evalai_normalize("John's Coca-Cola, 1,000?") == "john 's coca cola 1000"
    assert evalai_normalize("  The END.\n") == "end"


def _vizwiz(root):
    (root / "val").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "val" / "VizWiz_val_00000000.jpg")
    records = [
        {
            "image": "VizWiz_val_00000000.jpg",
            "question": "What is this?",
            "answerable": 0,
            "answer_type": "unanswerable",
            "answers": [{"answer": "unanswerable", "answer_confidence": "yes"}] * 9
            + [{"answer": "a can", "answer_confidence": "maybe"}],
        }
    ]
    (root / "val.json").write_text(json.dumps(records))
    return root


def test_vizwiz_task_and_its_llava_prompt(tmp_path):
    root = _vizwiz(tmp_path / "vizwiz")
    [item] = TASKS.get("vizwiz")().load("val", path=str(root))
    assert item.item_id == "val-VizWiz_val_00000000" and item.category == "unanswerable"
    assert item.answer == "unanswerable" and len(item.answers) == 10
    llava = TASKS.get("vizwiz-llava")()
    [prompted] = llava.load("val", path=str(root))
    assert prompted.question == (
        "What is this?\nWhen the provided information is insufficient, respond with 'Unanswerable'.\n"
        "Answer the question using a single word or phrase."
    )
    # 9 say unanswerable: leaving one of them out keeps 8 -> 1 (x9); leaving "a can" out keeps 9 -> 1 -> 1.0
    assert llava.score("Unanswerable", prompted) == 1.0 and llava.metric == "vizwiz_accuracy"


def test_textvqa_with_and_without_ocr_tokens(tmp_path):
    root = tmp_path / "textvqa"
    (root / "train_images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "train_images" / "003a8ae2ef43b901.jpg")
    data = {
        "dataset_name": "textvqa",
        "data": [
            {
                "question_id": 34602,
                "question": "what is the brand?",
                "image_id": "003a8ae2ef43b901",
                "answers": ["nokia"] * 8 + ["Nokia", "nokia phone"],
                "ocr_tokens": ["NOKIA", "5:30"],
            }
        ],
    }
    (root / "TextVQA_0.5.1_val.json").write_text(json.dumps(data))
    [pure] = TASKS.get("textvqa")().load("val", path=str(root))
    [ocr] = TASKS.get("textvqa-ocr")().load("val", path=str(root))
    assert pure.item_id == "val-34602" and pure.question == "what is the brand?" and pure.answer == "nokia"
    assert ocr.question == "what is the brand?\nReference OCR token: NOKIA, 5:30"
    [llava] = TASKS.get("textvqa-llava")().load("val", path=str(root))
    assert llava.question.endswith(
        "Reference OCR token: NOKIA, 5:30\nAnswer the question using a single word or phrase."
    )
    # normalized answers: nokia x9, "nokia phone" x1 -> "NOKIA." scores 1.0
    assert TASKS.get("textvqa")().score("NOKIA.", pure) == 1.0
