"""`vlmlab score --from lmms-eval / vlmevalkit`: the harnesses' own files, built to their documented fields, mapped to
vlmlab's items and scored with vlmlab's rules; a row that cannot be mapped is counted and named, never guessed."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest

from test_benchmark_formats import _gqa, _pope, _refcoco, _vqav2
from test_conformance_vizwiz_textvqa import _vizwiz
from vlmlab.cli import main
from vlmlab.config import DataSource, ImageConfig
from vlmlab.errors import DataError
from vlmlab.evaluation import harness_formats
from vlmlab.evaluation.score import AnswerFile, score_records


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _score(task, split, root, file, fmt, image=None, **kw):
    source = DataSource(task=task, split=split, path=str(root))
    return score_records(source, AnswerFile(file, fmt, **kw), image or ImageConfig())


# ----- lmms-eval ------------------------------------------------------------------------------------
def _pope_sample(doc_id, qid, question, target, answer):
    """An lmms-eval >= 0.4 sample of pope_* (`doc` dropped, `filtered_resps` flattened, pope_* payloads)."""
    payload = {"question_id": str(qid), "score": 0.0, "prediction": answer.lower(), "ground_truth": target}
    return {
        "doc_id": doc_id,
        "target": target,
        "filtered_resps": answer,
        "doc_hash": "x",
        "input": f"{question}\nAnswer the question using a single word or phrase.",
        **{f"pope_{m}": payload for m in ("accuracy", "precision", "recall", "f1_score", "yes_ratio")},
    }


def test_lmms_eval_pope_samples_map_by_question_id_and_the_task_s_variant(tmp_path, capsys):
    root = _pope(tmp_path)  # random-1 (yes), random-2 (no), adversarial-1 (no), adversarial-2 (yes)
    file = _jsonl(
        tmp_path / "20260101_samples_pope_adv.jsonl",
        [
            _pope_sample(0, 1, "Is there a thing 0 in the image?", "no", "No, there is not."),
            _pope_sample(1, 2, "Is there a thing 1 in the image?", "yes", "Yes"),
            _pope_sample(2, 9, "Is there a thing 9 in the image?", "no", "no"),  # no such question here
            _pope_sample(3, 1, "Is there a thing 0 in the image?", "no", "no"),  # the same question again
        ],
    )
    out = tmp_path / "scored"
    argv = ["score", "pope", str(file), "--from", "lmms-eval", "--path", str(root), "--out", str(out)]
    assert main(argv) == 0
    records = pd.read_parquet(out / "predictions.parquet")
    assert records["item_id"].tolist() == ["adversarial-1", "adversarial-2"] and records["score"].tolist() == [1, 1]
    assert records["confidence"].isna().all()  # lmms-eval logs no probabilities
    report = json.loads((out / "metrics.json").read_text())["scored"]["harness"]
    assert report == {
        "harness_task": "pope_adv",
        "rows": 4,
        "mapped": 2,
        "unmapped": 2,
        "unmapped_first": [
            "doc_id 2: names item adversarial-9, which pope:test does not have here",
            "doc_id 3: answers item adversarial-1 again (first: doc_id 0) (item adversarial-1)",
        ],
        "items_without_answer": 2,
    }
    err = capsys.readouterr().err
    assert "lmms-eval: 4 rows, 2 mapped to items, 2 not mapped and not scored (doc_id 2: names item" in err


def test_lmms_eval_rows_whose_question_or_gold_differ_are_not_mapped(tmp_path):
    root = _pope(tmp_path)
    file = _jsonl(
        tmp_path / "samples_pope_random.jsonl",
        [
            _pope_sample(0, 1, "Is there a thing 0 in the image?", "yes", "yes"),
            _pope_sample(1, 2, "Is there a dog in the image?", "no", "no"),  # another POPE release's question 2
            _pope_sample(2, 2, "Is there a thing 1 in the image?", "yes", "no"),  # its label is not ours
        ],
    )
    records, metrics = _score("pope", "test", root, file, "lmms-eval")
    assert records["item_id"].tolist() == ["random-1"]
    assert metrics["scored"]["harness"]["unmapped_first"] == [
        "doc_id 1: its question is not the item's (item random-2)",
        "doc_id 2: its gold answer 'yes' is not the item's 'no' (item random-2)",
    ]
    # a pope file of the whole 9,000 (task `pope`) names no variant: unmapped without --docs, mapped with them
    whole = _jsonl(
        tmp_path / "samples_pope.jsonl", [_pope_sample(0, 2, "Is there a thing 1 in the image?", "yes", "No")]
    )
    with pytest.raises(DataError, match=r"none of the 1 rows .*doc_id 0: no POPE variant \(category\) in the row"):
        _score("pope", "test", root, whole, "lmms-eval")
    docs = _jsonl(tmp_path / "docs.jsonl", [{"question_id": "2", "category": "adversarial", "answer": "yes"}])
    records, _ = _score("pope", "test", root, whole, "lmms-eval", docs=docs)
    assert records[["item_id", "score"]].values.tolist() == [["adversarial-2", 0.0]]  # "No" vs label yes


def test_lmms_eval_v03_samples_keep_the_doc_and_a_list_of_responses(tmp_path):
    root = _gqa(tmp_path)
    rows = [
        {
            "doc_id": i,
            "doc": {"id": qid, "imageId": "x", "question": q, "answer": a},
            "target": a,
            "arguments": {"0": {"max_new_tokens": 16}},
            "resps": [[pred]],
            "filtered_resps": [pred],
            "input": q + "\nAnswer the question using a single word or phrase.",
            "exact_match": 1.0,
        }
        for i, (qid, q, a, pred) in enumerate(
            [("02930152", "Is the sky dark?", "yes", "Yes."), ("07333408", "What is on the table?", "cup", "A cup.")]
        )
    ]
    records, metrics = _score("gqa", "testdev", root, _jsonl(tmp_path / "samples_gqa.jsonl", rows), "lmms-eval")
    # GQA's own rule: "Yes." -> yes (right); "A cup." keeps its article (wrong), whatever lmms-eval's rule said
    assert records[["item_id", "score"]].values.tolist() == [["testdev-02930152", 1.0], ["testdev-07333408", 0.0]]
    assert metrics["overall"] == {"accuracy": 0.5, "n": 2}
    # a split other than the lmms-eval task's is refused, naming both
    with pytest.raises(DataError, match="lmms-eval task gqa answers gqa:testdev questions, not gqa:val"):
        score_records(
            DataSource(task="gqa", split="val", path=str(root)),
            AnswerFile(tmp_path / "samples_gqa.jsonl", "lmms-eval"),
            ImageConfig(),
        )


def test_lmms_eval_v04_vqav2_maps_through_the_dataset_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = _vqav2(tmp_path)
    rows = [
        {"doc_id": 0, "target": "blue", "filtered_resps": "Blue", "input": "What colour is the ball?\nAnswer ..."},
        {"doc_id": 1, "target": "2", "filtered_resps": "two", "input": "How many dogs?\nAnswer ..."},
        {"doc_id": 2, "target": "yes", "filtered_resps": ["yes", "no"], "input": "Is it sunny?"},
    ]
    file = _jsonl(tmp_path / "samples_vqav2_val.jsonl", rows)
    with pytest.raises(DataError, match="doc_id 0: no question_id in the row"):
        _score("vqav2", "val", root, file, "lmms-eval")
    shards = tmp_path / "VQAv2" / "data"
    shards.mkdir(parents=True)
    image = pa.array([{"bytes": b"\xff", "path": "x.jpg"}] * 2)  # the image column is never read
    pq.write_table(
        pa.table({"question_id": [42002, 42001], "image": image}), shards / "validation-00000-of-00002.parquet"
    )
    pq.write_table(pa.table({"question_id": [42003], "image": image[:1]}), shards / "validation-00001-of-00002.parquet")
    records, metrics = _score("vqav2", "val", root, file, "lmms-eval", docs=shards)
    # "Blue": 8 of 10 humans said blue -> 1; "two" against ten "2" -> 0 (the humans agree: compared as written)
    assert records[["item_id", "score"]].values.tolist() == [["val-42001", 0.0], ["val-42002", 1.0]]  # items' order
    assert metrics["scored"]["harness"]["unmapped_first"] == [
        "doc_id 2: 2 responses (repeats or several requests), not one answer"
    ]


def test_lmms_eval_textvqa_and_vizwiz_ids_come_from_their_submission_payloads(tmp_path):
    from PIL import Image

    root = tmp_path / "textvqa"
    (root / "train_images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "train_images" / "003a8ae2ef43b901.jpg")
    record = {
        "question_id": 34602,
        "question": "what is the brand?",
        "image_id": "003a8ae2ef43b901",
        "ocr_tokens": ["NOKIA"],
    }
    answers = ["nokia"] * 8 + ["Nokia", "nokia phone"]
    (root / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": [record | {"answers": answers}]}))
    sample = {  # lmms-eval capitalizes the question and adds its own instruction
        "doc_id": 0,
        "target": "['nokia', ...]",
        "filtered_resps": "NOKIA.",
        "input": "What is the brand?\nAnswer the question using a single word or phrase.",
        "exact_match": 1.0,
        "submission": {"question_id": 34602, "answer": "nokia"},
    }
    file = _jsonl(tmp_path / "samples_textvqa_val.jsonl", [sample])
    for task in ("textvqa", "textvqa-llava"):  # another prompt around the same question maps the same
        records, _ = _score(task, "val", root, file, "lmms-eval")
        assert records[["item_id", "score"]].values.tolist() == [["val-34602", 1.0]]

    root = _vizwiz(tmp_path / "vizwiz")
    sample = {
        "doc_id": 0,
        "target": "unanswerable",
        "filtered_resps": "Unanswerable",
        "input": "What is this?\nWhen the provided information is insufficient, respond with 'Unanswerable'.",
        "exact_match": 1.0,
        "submission": {"image": "VizWiz_val_00000000.jpg", "answer": "unanswerable"},
    }
    records, _ = _score("vizwiz", "val", root, _jsonl(tmp_path / "samples_vizwiz_vqa_val.jsonl", [sample]), "lmms-eval")
    assert records[["item_id", "score"]].values.tolist() == [["val-VizWiz_val_00000000", 1.0]]


def test_lmms_eval_refcoco_boxes_are_read_in_the_original_image_as_lmms_eval_asks(tmp_path):
    root = _refcoco(tmp_path)  # testA: ref 6 (ann 11) "middle dog", box [50, 25, 150, 75] of a 200 x 100 image
    prompt = "Bounding box coordinates are specified in the format ... describes: middle dog"

    def sample(doc_id, answer, sentence="middle dog", ann=11):
        payload = {"answer": sentence, "pred": [0, 0, 0, 0], "ann_id": ann, "bbox": [0.25, 0.25, 0.75, 0.75]}
        rec = {"doc_id": doc_id, "target": "[0.25, 0.25, 0.75, 0.75]", "filtered_resps": answer, "input": prompt}
        return rec | {f"refcoco_{m}": payload for m in ("IoU", "ACC@0.5", "Center_ACC")}

    file = _jsonl(
        tmp_path / "samples_refcoco_bbox_rec_testA.jsonl",
        [sample(0, "[0.25, 0.25, 0.75, 0.75]"), sample(1, "the dog", sentence="left dog")],
    )
    letterbox = ImageConfig(size=64, geometry="letterbox-square")
    records, metrics = _score("refcoco", "testA", root, file, "lmms-eval", image=letterbox)
    assert records["item_id"].tolist() == ["testA-6-0"] and records["score"].tolist() == [1.0]
    assert metrics["scored"]["harness"]["unmapped_first"] == [
        "doc_id 1: no ref of annotation 11 in split testA says 'left dog'"
    ]
    # continuous pixel IoU, as lmms-eval computes it: shifted by 0.16 of the image width the overlap is 0.34 of
    # 0.66 (IoU 0.515, a hit); by 0.17 it is 0.33 of 0.67 (0.4925, a miss) — closer than the 0-99 grid resolves
    for shift, hit in ((0.16, 1.0), (0.17, 0.0)):
        box = f"[{0.25 + shift:.2f}, 0.25, {0.75 + shift:.2f}, 0.75]"
        moved = _jsonl(tmp_path / "samples_refcoco_bbox_rec_testA.jsonl", [sample(0, box)])
        assert _score("refcoco", "testA", root, moved, "lmms-eval", image=letterbox)[0]["score"].tolist() == [hit]


# ----- VLMEvalKit -----------------------------------------------------------------------------------
def test_vlmevalkit_pope_xlsx_maps_by_question_id_and_category(tmp_path):
    root = _pope(tmp_path)
    table = pd.DataFrame(
        {
            "index": [0, 1, 2],
            "question": ["Is there a thing 0 in the image?", "Is there a thing 1 in the image?", "Is there a thing 1?"],
            "answer": ["No", "Yes", "Yes"],
            "category": ["adversarial", "adversarial", "popular,random"],
            "question_id": [1, 2, 2],
            "prediction": ["No.", "There is no such thing.", "yes"],
        }
    )
    file = tmp_path / "llava_v1.5_7b_POPE.xlsx"
    table.to_excel(file, index=False)
    records, metrics = _score("pope", "test", root, file, "vlmevalkit")
    assert records[["item_id", "score"]].values.tolist() == [["adversarial-1", 1.0], ["adversarial-2", 0.0]]
    assert metrics["scored"]["harness"]["unmapped_first"] == [
        "index 2: answers several POPE variants at once (popular,random); give an index map"
    ]
    assert metrics["tasks"]["pope"]["summary"]["yes_ratio"] == 0.0


def test_vlmevalkit_tsv_and_index_map(tmp_path):
    root = _gqa(tmp_path)
    file = tmp_path / "model_GQA_TestDev_Balanced.tsv"
    rows = [
        {"index": 0, "question": "Is the sky dark?", "answer": "yes", "prediction": "no"},
        {"index": 1, "question": "What is on the table?", "answer": "cup", "prediction": "cup."},
    ]
    pd.DataFrame(rows).to_csv(file, sep="\t", index=False, quoting=csv.QUOTE_ALL)  # as VLMEvalKit's dump writes
    with pytest.raises(DataError, match="index 0: no question_id in the row"):
        _score("gqa", "testdev", root, file, "vlmevalkit")
    index_map = tmp_path / "map.csv"
    index_map.write_text("index,item_id\n0,testdev-02930152\n1,testdev-07333408\n")
    records, _ = _score("gqa", "testdev", root, file, "vlmevalkit", index_map=index_map)
    assert records[["item_id", "prediction", "score"]].values.tolist() == [
        ["testdev-02930152", "no", 0.0],
        ["testdev-07333408", "cup.", 1.0],
    ]
    # an index map that points a row at the wrong question is caught by the question check
    index_map.write_text("index,item_id\n0,testdev-07333408\n")
    with pytest.raises(DataError, match=r"index 0: its question is not the item's .*index 1: not in the index map"):
        _score("gqa", "testdev", root, file, "vlmevalkit", index_map=index_map)


def test_vlmevalkit_needs_index_and_prediction_columns(tmp_path):
    root = _gqa(tmp_path)
    file = tmp_path / "x.tsv"
    pd.DataFrame([{"question": "Q", "answer": "a"}]).to_csv(file, sep="\t", index=False)
    with pytest.raises(DataError, match="needs the columns index and prediction; has question, answer"):
        _score("gqa", "testdev", root, file, "vlmevalkit")


# ----- bounds and format detection -------------------------------------------------------------------
def test_readers_are_bounded(tmp_path, monkeypatch):
    deep = tmp_path / "samples_gqa.jsonl"
    deep.write_text('{"doc_id": 0, "filtered_resps": ' + "[" * 100 + "]" * 100 + "}\n")
    with pytest.raises(DataError, match=r"samples_gqa.jsonl:1: JSON nested deeper than 64 levels"):
        harness_formats.read_lmms_eval(deep)
    monkeypatch.setattr(harness_formats, "MAX_LINE_BYTES", 64)
    long = _jsonl(tmp_path / "long.jsonl", [{"doc_id": 0, "filtered_resps": "x" * 100}])
    with pytest.raises(DataError, match=r"long.jsonl:1: line longer than"):
        harness_formats.read_lmms_eval(long)
    monkeypatch.setattr(harness_formats, "MAX_XLSX_UNPACKED", 100)
    pd.DataFrame({"index": [0], "prediction": ["a" * 500]}).to_excel(tmp_path / "big.xlsx", index=False)
    with pytest.raises(DataError, match="big.xlsx: unpacks to more than"):
        harness_formats.read_table(tmp_path / "big.xlsx")
    (tmp_path / "fake.xlsx").write_text("not a zip")
    with pytest.raises(DataError, match="fake.xlsx: not an xlsx file"):
        harness_formats.read_table(tmp_path / "fake.xlsx")


def test_format_detection(tmp_path):
    assert harness_formats.detect_format(_jsonl(tmp_path / "a.jsonl", [{"doc_id": 1}])) == "lmms-eval"
    assert harness_formats.detect_format(_jsonl(tmp_path / "b.jsonl", [{"item_id": "x", "prediction": ""}])) == "vlmlab"
    assert harness_formats.detect_format(tmp_path / "c.xlsx") == "vlmevalkit"
    assert harness_formats.lmms_eval_task(tmp_path / "20240501_samples_pope_random.jsonl") == "pope_random"
