"""`vlmlab score`: answers produced elsewhere, scored with the same metrics, columns and keys as `vlmlab eval`."""

from __future__ import annotations

import json

import pandas as pd

from vlmlab.cli import main
from vlmlab.evaluation.records import RECORD_COLUMNS


def _pope(root):
    (root / "val2014").mkdir(parents=True)
    (root / "val2014" / "a.jpg").write_bytes(b"")
    labels = ["yes", "no", "yes", "no"]
    (root / "coco_pope_random.json").write_text(
        "\n".join(
            json.dumps({"question_id": i, "image": "a.jpg", "text": "Q?", "label": lab})
            for i, lab in enumerate(labels, start=1)
        )
    )
    return root


def _answers(path, answers):
    path.write_text("\n".join(json.dumps({"item_id": k, "prediction": v}) for k, v in answers.items()))
    return path


def test_score_writes_what_eval_writes(tmp_path, capsys):
    root = _pope(tmp_path / "pope")
    answers = _answers(
        tmp_path / "a.jsonl",
        {"random-1": "Yes, there is.", "random-2": "No.", "random-3": "no", "random-4": "There is not."},
    )
    out = tmp_path / "scored"
    assert main(["score", "pope", "--path", str(root), "--predictions", str(answers), "--out", str(out)]) == 0
    records = pd.read_parquet(out / "predictions.parquet")
    assert list(records.columns) == RECORD_COLUMNS and records["score"].tolist() == [1.0, 1.0, 0.0, 1.0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"] == {"accuracy": 0.75, "n": 4} and metrics["tasks"]["pope"]["metric"] == "pope_yes_no"
    # read as yes, no, no, no vs labels yes, no, yes, no: TP 1, FN 1, TN 2 -> recall 0.5, F1 2/3, yes ratio 0.25
    assert (
        metrics["tasks"]["pope"]["summary"]["f1"] == 2 / 3 and metrics["tasks"]["pope"]["summary"]["yes_ratio"] == 0.25
    )
    assert "pope/random: accuracy 0.750" in capsys.readouterr().err


def test_unknown_and_missing_ids_are_one_line(tmp_path, capsys):
    root = _pope(tmp_path / "pope")
    wrong = _answers(tmp_path / "w.jsonl", {"random-1": "yes", "popular-9": "no", "random-77": "no"})
    assert main(["score", "pope", "--path", str(root), "--predictions", str(wrong), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and "2 answers name items that pope:test does not have (popular-9, random-77)" in err
    )
    few = _answers(tmp_path / "f.jsonl", {"random-1": "yes"})
    assert main(["score", "pope", "--path", str(root), "--predictions", str(few), "--out", str(tmp_path / "o")]) == 1
    assert "no answer for 3 of 4 items of pope:test (random-2, random-3, random-4)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    # --limit scores the first items only
    assert (
        main(
            [
                "score",
                "pope",
                "--path",
                str(root),
                "--predictions",
                str(few),
                "--out",
                str(tmp_path / "o"),
                "--limit",
                "1",
            ]
        )
        == 0
    )


def test_task_and_split_are_not_read_as_emoji_codes(capsys):
    """`refcoco:train:` once printed as `refcoco🚋`: the console renders no emoji codes."""
    from vlmlab.progress import console

    console.print("refcoco:train: 3 items")
    assert "refcoco:train: 3 items" in capsys.readouterr().err
