"""Loaders for real benchmark layouts (LLaVA JSON, VQAv2, GQA, POPE, RefCOCO) on tiny fixtures written here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vlmlab.config import DataSource, ImageConfig
from vlmlab.data.items import VQAItem
from vlmlab.data.sources import load_source
from vlmlab.data.tasks.declarative import DeclarativeTask, read_spec
from vlmlab.errors import ConfigError, DataError
from vlmlab.metrics import METRICS, pope_summary
from vlmlab.registry import TASKS


def _image(path, size=(16, 16), colour=(255, 0, 0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _task(task_id):
    return TASKS.get(task_id)()


# ----- llava-json ---------------------------------------------------------------------------------
def _llava(tmp_path, records=None):
    _image(tmp_path / "coco" / "train2017" / "a.png")
    _image(tmp_path / "b.png")
    records = (
        records
        if records is not None
        else [
            {
                "id": "a1",
                "image": "coco/train2017/a.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat colour is it?"},
                    {"from": "gpt", "value": "Red."},
                    {"from": "human", "value": "Is it big?"},
                    {"from": "gpt", "value": "No."},
                ],
            },
            {"id": 7, "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
            {
                "id": "b",
                "image": "b.png",
                "conversations": [
                    {"from": "human", "value": "Describe it.\n<image>"},
                    {"from": "gpt", "value": "A red square."},
                ],
            },
        ]
    )
    return _write_json(tmp_path / "mix.json", records)


def test_llava_json_one_item_per_record_with_its_whole_conversation(tmp_path):
    file = _llava(tmp_path)
    task = _task("llava-json")
    items = task.load("train", path=str(file))
    assert [it.item_id for it in items] == ["a1", "7", "b"]
    assert items[0].turns == [("What colour is it?", "Red."), ("Is it big?", "No.")]
    assert [it.question for it in items] == ["What colour is it?", "Hi", "Describe it."]
    assert [it.answer for it in items] == ["Red.", "Hello", "A red square."]
    assert [it.category for it in items] == ["coco", "text", "all"]
    assert items[0].image == str((tmp_path / "coco" / "train2017" / "a.png").resolve())
    assert items[1].image is None and items[1].turns == [("Hi", "Hello")]  # text-only: kept, no image
    assert [it.image_at_end for it in items] == [False, False, True]  # "Describe it.\n<image>"
    assert len(task.load("train", limit=2, path=str(file))) == 2


def test_llava_json_directory_of_splits_and_repeated_ids(tmp_path):
    rec = {
        "id": "x",
        "image": "b.png",
        "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}],
    }
    _llava(tmp_path, [rec, rec])
    (tmp_path / "mix.json").rename(tmp_path / "val.json")
    items = _task("llava-json").load("val", path=str(tmp_path))
    assert [it.item_id for it in items] == ["x", "x@1"]


@pytest.mark.parametrize(
    "record,message",
    [
        ({"id": 1, "image": "b.png"}, "missing field 'conversations'"),
        (
            {
                "id": 1,
                "image": "b.png",
                "conversations": [{"from": "gpt", "value": "A"}, {"from": "human", "value": "Q"}],
            },
            "turn 0: expected a 'human' turn, got 'gpt'",
        ),
        (
            {
                "id": 1,
                "image": "b.png",
                "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": 3}],
            },
            "turn 1: field 'value' must be a string",
        ),
        (
            {"id": 1, "image": "b.png", "conversations": [{"from": "human", "value": "Q"}]},
            "human/gpt turn pairs, got 1 turns",
        ),
        (
            {
                "id": 1,
                "image": "../outside.png",
                "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}],
            },
            "image path '../outside.png' leaves the image directory",
        ),
        ("not a record", "expected a JSON object"),
        (
            {"id": 1, "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]},
            "a text-only record (no image) has an <image> tag",
        ),
        (
            {
                "id": 1,
                "image": "b.png",
                "conversations": [
                    {"from": "human", "value": "Q"},
                    {"from": "gpt", "value": "A"},
                    {"from": "human", "value": "<image>\nQ2"},
                    {"from": "gpt", "value": "A2"},
                ],
            },
            "<image> may appear only in the first human turn",
        ),
    ],
)
def test_llava_json_malformed_record_names_file_and_record(tmp_path, record, message):
    good = {
        "id": 0,
        "image": "b.png",
        "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}],
    }
    file = _llava(tmp_path, [good, record])
    with pytest.raises(DataError) as exc:
        _task("llava-json").load("train", path=str(file))
    assert f"{file}[record 1]" in str(exc.value) and message in str(exc.value)


def test_llava_json_bad_json_missing_file_and_no_path(tmp_path):
    file = tmp_path / "broken.json"
    file.write_text('[{"id": 1,\n "image": }]')
    with pytest.raises(DataError, match=r"broken\.json: not valid JSON \(.* at line 2\)"):
        _task("llava-json").load("train", path=str(file))
    with pytest.raises(DataError, match=f"{tmp_path / 'train.json'}: LLaVA data file not found"):
        _task("llava-json").load("train", path=str(tmp_path))
    with pytest.raises(ConfigError, match="^path: llava-json needs a local path"):
        _task("llava-json").load("train")


# ----- vqav2 --------------------------------------------------------------------------------------
def _human(answers):
    return [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]


def _vqav2(tmp_path, annotations=True):
    root = tmp_path / "vqav2"
    _image(root / "val2014" / "COCO_val2014_000000000042.jpg")
    _write_json(
        root / "v2_OpenEnded_mscoco_val2014_questions.json",
        {
            "questions": [
                {"image_id": 42, "question": "How many dogs?", "question_id": 42001},
                {"image_id": 42, "question": "What colour is the ball?", "question_id": 42002},
                {"image_id": 42, "question": "Is it sunny?", "question_id": 42003},
            ]
        },
    )
    if annotations:
        _write_json(
            root / "v2_mscoco_val2014_annotations.json",
            {
                "annotations": [
                    {
                        "question_id": 42001,
                        "image_id": 42,
                        "answers": _human(["2"] * 10),
                        "multiple_choice_answer": "2",
                        "answer_type": "number",
                        "question_type": "how many",
                    },
                    {
                        "question_id": 42002,
                        "image_id": 42,
                        "answers": _human(["red"] * 2 + ["blue"] * 8),
                        "multiple_choice_answer": "blue",
                        "answer_type": "other",
                        "question_type": "what color is the",
                    },
                    {
                        "question_id": 42003,
                        "image_id": 42,
                        "answers": _human(["yes"] * 10),
                        "multiple_choice_answer": "yes",
                        "answer_type": "yes/no",
                        "question_type": "is it",
                    },
                ]
            },
        )
    return root


def test_vqav2_joins_questions_and_annotations(tmp_path):
    root = _vqav2(tmp_path)
    items = _task("vqav2").load("val", path=str(root))
    assert [it.item_id for it in items] == ["val-42001", "val-42002", "val-42003"]
    assert [it.category for it in items] == ["number", "other", "yes/no"]
    assert [it.answer for it in items] == ["2", "blue", "yes"]
    assert items[1].answers == ("red",) * 2 + ("blue",) * 8
    assert items[0].image == str(root / "val2014" / "COCO_val2014_000000000042.jpg")
    assert len(_task("vqav2").load("val", limit=1, path=str(root))) == 1


def test_vqav2_scores_with_the_ten_human_answers(tmp_path):
    task = _task("vqav2")
    count, colour, _ = task.load("val", path=str(_vqav2(tmp_path)))
    assert task.score("2", count) == 1.0
    # all ten humans agree: the current official script compares the trimmed prediction as it is
    assert task.score("Two", count) == 0.0 and task.metric == "vqa_accuracy"
    assert task.score("red", colour) == pytest.approx(0.6)  # 2 of 10 humans: (8 * 2/3 + 2 * 1/3) / 10
    assert task.score("blue", colour) == 1.0
    assert task.score("green", colour) == 0.0


def test_vqa_accuracy_metric_in_a_task_yaml(tmp_path):
    root = _vqav2(tmp_path)
    yaml_file = tmp_path / "v.yaml"
    yaml_file.write_text(
        f"task: my-vqav2\nformat: vqav2\npath: {root}\nprompt: '{{question}} One word.'\n"
        "metric: vqa_accuracy\ncategories: [other]\n"
    )
    spec = read_spec(yaml_file)
    task = type(spec.task, (DeclarativeTask,), {"spec": spec})()
    [item] = task.load("val")
    assert item.question == "What colour is the ball? One word." and item.task == "my-vqav2"
    assert task.score("red", item) == pytest.approx(0.6)  # exact match against "blue" would give 0
    single = VQAItem("i", "t", "all", "q", "red", "x.png")  # no human answers: exact match on `answer`
    assert METRICS["vqa_accuracy"]("Red", single) == 1.0 and METRICS["exact_match"]("red", item) == 0.0


def test_vqav2_errors_name_the_file(tmp_path):
    root = _vqav2(tmp_path, annotations=False)
    with pytest.raises(DataError, match="v2_mscoco_val2014_annotations.json: VQAv2 annotations file not found"):
        _task("vqav2").load("val", path=str(root))
    with pytest.raises(ConfigError, match="^split: vqav2 has splits train, val, not 'test'"):
        _task("vqav2").load("test", path=str(root))
    with pytest.raises(DataError, match="v2_OpenEnded_mscoco_train2014_questions.json: VQAv2 questions file not found"):
        _task("vqav2").load("train", path=str(root))
    _write_json(
        root / "v2_mscoco_val2014_annotations.json",
        {"annotations": [{"question_id": 42001, "answers": _human(["2"] * 10), "multiple_choice_answer": "2"}]},
    )
    with pytest.raises(DataError, match=r"annotations.json\[annotation 0\]: missing field 'answer_type'"):
        _task("vqav2").load("val", path=str(root))
    _write_json(
        root / "v2_mscoco_val2014_annotations.json",
        {
            "annotations": [
                {
                    "question_id": 42001,
                    "answers": _human(["2"] * 10),
                    "multiple_choice_answer": "2",
                    "answer_type": "number",
                }
            ]
        },
    )
    task = _task("vqav2")  # as the official API: questions without an annotation are skipped, and counted
    assert [it.item_id for it in task.load("val", path=str(root))] == ["val-42001"]
    assert task.notes == {"skipped_without_annotation": 2}


# ----- gqa ----------------------------------------------------------------------------------------
def _gqa(tmp_path, questions=None):
    root = tmp_path / "gqa"
    _image(root / "images" / "2354786.jpg")
    _image(root / "images" / "n161313.jpg")
    questions = (
        questions
        if questions is not None
        else {
            "02930152": {
                "imageId": "2354786",
                "question": "Is the sky dark?",
                "answer": "yes",
                "fullAnswer": "Yes, it is.",
                "types": {"structural": "verify", "semantic": "attr", "detailed": "verifyAttr"},
            },
            "07333408": {
                "imageId": "n161313",
                "question": "What is on the table?",
                "answer": "cup",
                "fullAnswer": "A cup.",
                "types": {"structural": "query", "semantic": "rel", "detailed": "relS"},
            },
        }
    )
    _write_json(root / "testdev_balanced_questions.json", questions)
    return root


def test_gqa_loads_balanced_questions(tmp_path):
    root = _gqa(tmp_path)
    task = _task("gqa")
    items = task.load("testdev", path=str(root))
    assert [it.item_id for it in items] == ["testdev-02930152", "testdev-07333408"]
    assert [it.category for it in items] == ["verify", "query"]
    assert items[1].answer == "cup" and items[1].image == str((root / "images" / "n161313.jpg").resolve())
    assert task.score("Cup.", items[1]) == 1.0  # GQA: trailing periods stripped, lower-cased, then equal
    assert task.score("A cup.", items[1]) == 0.0  # the article stays: "a cup" != "cup"


def test_gqa_errors(tmp_path):
    root = _gqa(
        tmp_path, {"q1": {"imageId": "../../secret", "question": "Q", "answer": "A", "types": {"structural": "query"}}}
    )
    with pytest.raises(DataError, match=r"testdev_balanced_questions.json\[question 'q1'\]: image path .* leaves"):
        _task("gqa").load("testdev", path=str(root))
    _write_json(root / "testdev_balanced_questions.json", {"q2": {"imageId": "1", "question": "Q", "answer": "A"}})
    with pytest.raises(DataError, match=r"\[question 'q2'\]: missing field 'types'"):
        _task("gqa").load("testdev", path=str(root))
    with pytest.raises(DataError, match="val_balanced_questions.json: GQA questions file not found"):
        _task("gqa").load("val", path=str(root))


# ----- pope ---------------------------------------------------------------------------------------
def _pope(tmp_path):
    root = tmp_path / "pope"
    _image(root / "val2014" / "COCO_val2014_000000310196.jpg")
    for variant, labels in (("random", ["yes", "no"]), ("adversarial", ["no", "Yes"])):
        lines = [
            json.dumps(
                {
                    "question_id": i + 1,
                    "image": "COCO_val2014_000000310196.jpg",
                    "text": f"Is there a thing {i} in the image?",
                    "label": label,
                }
            )
            for i, label in enumerate(labels)
        ]
        (root / f"coco_pope_{variant}.json").write_text("\n".join(lines) + "\n")
    return root


def test_pope_reads_the_variants_present(tmp_path):
    root = _pope(tmp_path)
    task = _task("pope")
    items = task.load("test", path=str(root))
    assert [it.item_id for it in items] == ["random-1", "random-2", "adversarial-1", "adversarial-2"]
    assert [it.category for it in items] == ["random", "random", "adversarial", "adversarial"]
    assert [it.answer for it in items] == ["yes", "no", "no", "yes"]
    assert task.answer_type == "yes-no" and task.score("Yes.", items[0]) == 1.0
    assert [it.item_id for it in task.load("test", limit=3, path=str(root))][-1] == "adversarial-1"
    single = task.load("test", path=str(root / "coco_pope_adversarial.json"))
    assert [it.category for it in single] == ["adversarial", "adversarial"]


def test_pope_errors(tmp_path):
    root = _pope(tmp_path)
    with pytest.raises(ConfigError, match="^split: pope has splits test, not 'train'"):
        _task("pope").load("train", path=str(root))
    (root / "coco_pope_popular.json").write_text(
        json.dumps({"question_id": 1, "image": "x.jpg", "text": "Q", "label": "maybe"})
    )
    with pytest.raises(DataError, match=r"coco_pope_popular.json:1: label must be yes or no, got 'maybe'"):
        _task("pope").load("test", path=str(root))
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'}: POPE file or directory not found"):
        _task("pope").load("test", path=str(tmp_path / "nope"))


def test_pope_summary():
    stats = pope_summary(["yes", "Yes.", "yes", "no"], ["yes", "no", "yes", "no"])
    assert stats == pytest.approx({"accuracy": 0.75, "precision": 2 / 3, "recall": 1.0, "f1": 0.8, "yes_ratio": 0.75})
    none_yes = pope_summary(["no", "no"], ["yes", "no"])
    assert none_yes["precision"] == 0.0 and none_yes["f1"] == 0.0 and none_yes["accuracy"] == 0.5
    with pytest.raises(ValueError):
        pope_summary(["yes"], [])


# ----- refcoco ------------------------------------------------------------------------------------
def _refcoco(tmp_path):
    root = tmp_path / "refcoco"
    _image(root / "images" / "COCO_train2014_000000000001.jpg", size=(200, 100))
    _write_json(
        root / "instances.json",
        {
            "images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "width": 200, "height": 100}],
            "annotations": [
                {"id": 10, "image_id": 1, "bbox": [0, 0, 200, 100], "category_id": 18},
                {"id": 11, "image_id": 1, "bbox": [50, 25, 100, 50], "category_id": 18},
            ],
            "categories": [{"id": 18, "name": "dog"}],
        },
    )
    _write_json(
        root / "refs.json",
        [
            {
                "ref_id": 5,
                "ann_id": 10,
                "image_id": 1,
                "split": "train",
                "category_id": 18,
                "sentences": [{"sent": "the whole picture"}, {"sent": "everything"}],
                "file_name": "COCO_train2014_000000000001_10.jpg",
            },
            {
                "ref_id": 6,
                "ann_id": 11,
                "image_id": 1,
                "split": "testA",
                "category_id": 18,
                "sentences": [{"sent": "middle dog"}],
                "file_name": "COCO_train2014_000000000001_11.jpg",
            },
        ],
    )
    return root


def test_refcoco_one_item_per_sentence_with_the_box(tmp_path):
    root = _refcoco(tmp_path)
    task = _task("refcoco")
    items = task.load("train", path=str(root))
    assert [it.item_id for it in items] == ["train-5-0", "train-5-1"]
    assert items[0].question == "Give the box of: the whole picture" and items[0].category == "dog"
    assert (
        items[0].answer == "[0, 0, 99, 99]" and items[0].box == (0, 0, 200, 100) and items[0].image_size == (200, 100)
    )
    [middle] = task.load("testA", path=str(root))
    assert middle.answer == "[25, 25, 74, 74]"  # [50, 25, 150, 75] of 200 x 100, stretched
    assert (
        task.answer_type == "box"
        and task.score("[25, 25, 75, 75]", middle) == 1.0
        and task.score("no box", middle) == 0.0
    )


def test_load_source_projects_boxes_through_the_letterbox(tmp_path):
    root = _refcoco(tmp_path)
    source = DataSource(task="refcoco", split="testA", path=str(root))
    _, [stretched] = load_source(source, "data.eval.0", ImageConfig(size=64, geometry="resize"))
    assert stretched.answer == "[25, 25, 74, 74]"
    # letterboxed to 64: scale 0.32, the image spans rows 16-48; the box [50, 25, 150, 75] -> [16, 24, 48, 40] px
    _, [boxed] = load_source(source, "data.eval.0", ImageConfig(size=64, geometry="letterbox-square"))
    assert boxed.answer == "[25, 37, 74, 62]" and boxed.box == stretched.box
    task, items = load_source(
        DataSource(task="vqav2", split="val", path=str(_vqav2(tmp_path))),
        "data.eval.1",
        ImageConfig(size=64, geometry="letterbox-square"),
    )
    assert [it.answer for it in items] == ["2", "blue", "yes"]  # items without a box are left alone


def test_refcoco_errors(tmp_path):
    root = _refcoco(tmp_path)
    with pytest.raises(DataError, match=r"refs.json: no refs in split 'val' \(present: testA, train\)"):
        _task("refcoco").load("val", path=str(root))
    with pytest.raises(ConfigError, match="^data.train.split: refcoco has splits"):
        load_source(DataSource(task="refcoco", split="testD", path=str(root)), "data.train")
    refs = json.loads((root / "refs.json").read_text())
    refs[1]["ann_id"] = 99
    _write_json(root / "refs.json", refs)
    with pytest.raises(DataError, match=r"refs.json\[ref 1\]: ann_id 99 is not in instances.json"):
        _task("refcoco").load("testA", path=str(root))
    _write_json(
        root / "instances.json",
        {
            "images": [{"id": 1, "file_name": "a.jpg", "width": 2, "height": 2}],
            "annotations": [{"id": 10, "bbox": [0, 0, 1]}],
        },
    )
    with pytest.raises(DataError, match=r"instances.json\[annotation 0\]: bbox must be 4 numbers"):
        _task("refcoco").load("train", path=str(root))
    (root / "instances.json").unlink()
    with pytest.raises(DataError, match=f"{root / 'instances.json'}: COCO instances file not found"):
        _task("refcoco").load("train", path=str(root))


def test_llava_json_follows_a_symlinked_image_folder_only_into_image_roots_and_never_dotdot(tmp_path, monkeypatch):
    """LLaVA's playground/data links coco/ to a shared copy: a link out of the data directory is refused (as in every
    format) unless the person running vlmlab names the shared copy in $VLMLAB_IMAGE_ROOTS."""
    shared = tmp_path / "shared" / "coco"
    _image(shared / "a.png")
    data = tmp_path / "data"
    data.mkdir()
    (data / "coco").symlink_to(shared, target_is_directory=True)
    rec = {
        "id": 1,
        "image": "coco/a.png",
        "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}],
    }
    (data / "mix.json").write_text(json.dumps([rec]))
    with pytest.raises(DataError, match=r"leaves the image directory .* through a symbolic link .*VLMLAB_IMAGE_ROOTS"):
        _task("llava-json").load("train", path=str(data / "mix.json"))
    monkeypatch.setenv("VLMLAB_IMAGE_ROOTS", str(tmp_path / "shared"))
    items = _task("llava-json").load("train", path=str(data / "mix.json"))
    assert items[0].image == str(data.resolve() / "coco" / "a.png") and Path(items[0].image).is_file()
    for bad in ("coco/../../shared/coco/a.png", "/etc/hostname"):
        (data / "mix.json").write_text(json.dumps([dict(rec, image=bad)]))
        with pytest.raises(DataError, match="leaves the image directory"):
            _task("llava-json").load("train", path=str(data / "mix.json"))
