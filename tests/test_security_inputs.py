"""Untrusted input files, tried as a hostile user would (docs/reliability.md, "Threat model"): configs, answers,
dataset files, pickles, study records and over-long prompts end in one line with the documented exit code (2 for
configs, 1 for data), at once, through the CLI in a fresh process; plus the report's escaping and `study --check`
on a large design. Helpers in _hostile.py."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from _hostile import cli, copy_run, in_parallel, llava_dir, one_line, train_tiny, turns, vqa_dir
from conftest import TINY
from vlmlab.errors import EXIT_CONFIG, EXIT_DATA


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    return train_tiny(tmp_path_factory)


# ----- 4. bounded parsers -------------------------------------------------------------------------------------------
def test_configs_are_parsed_within_bounds(tmp_path):
    bomb = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        bomb.append(f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 9) + "]")
    files = {
        "bomb.yaml": "\n".join(bomb) + "\n",  # 9^9 strings once expanded (a hang at 6.8 GB before)
        "small-bomb.yaml": "\n".join(bomb[:6]) + "\nseed: *f\n",  # a 34.7 MB 'one-line' error before
        "block.yaml": "model:\n" + "- " * 5000 + "x\n",
        "flow.yaml": "model: " + "[" * 5000 + "]" * 5000 + "\n",
        "cycle.yaml": "model: &m {vision: *m}\n",
        "huge.yaml": "name: x\n" + "#" * (5 << 20) + "\n",
        "long-value.yaml": yaml.safe_dump({**TINY, "seed": list(range(20_000))}),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    results = in_parallel([("train", tmp_path / name) for name in files])  # each ends (the bomb hung at 6.8 GB)
    expected = {
        "bomb.yaml": (str(tmp_path / "bomb.yaml"), "aliases expand to more than 10,000 nodes"),
        "small-bomb.yaml": (str(tmp_path / "small-bomb.yaml"), "aliases expand to more than 10,000 nodes"),
        "block.yaml": (str(tmp_path / "block.yaml"), "nested deeper than 64 levels"),
        "flow.yaml": (str(tmp_path / "flow.yaml"), "nested deeper than 64 levels"),
        "cycle.yaml": (str(tmp_path / "cycle.yaml"), "alias *m refers to a node that contains it"),
        "huge.yaml": (str(tmp_path / "huge.yaml"), "larger than 4 MiB"),
        "long-value.yaml": ("seed: Input should be a valid integer (got [0, 1, 2", "more characters)"),
    }
    for (code, _, err), name in zip(results, files):
        line = one_line(code, err, EXIT_CONFIG, *expected[name])
        assert len(line) < 400, line


def test_data_files_and_pickles_are_parsed_within_bounds(tmp_path):
    data = vqa_dir(
        tmp_path / "data", [{"id": i, "image": "red.png", "question": "color?", "answer": "red"} for i in range(3)]
    )
    deep = tmp_path / "deep.jsonl"
    deep.write_text(
        json.dumps({"item_id": "test-0", "prediction": "red"})
        + "\n"
        + '{"item_id": "test-1", "prediction": "red", "x": '
        + "[" * 100_000
        + "]" * 100_000
        + "}\n"
    )
    nested = tmp_path / "nested.jsonl"
    nested.write_text('{"item_id": "test-0", "prediction": "red", "x": ' + "[" * 80 + "]" * 80 + "}\n")
    separators = tmp_path / "separators.jsonl"  # raw U+2028 / U+0085 inside strings, as ensure_ascii=False writes
    separators.write_text(
        "".join(
            json.dumps({"item_id": f"test-{i}", "prediction": f"red{sep}"}, ensure_ascii=False) + "\n"
            for i, sep in enumerate(("\u2028", "\u0085", ""))
        ),
        encoding="utf-8",
    )
    cyclic = []
    cyclic.append(cyclic)
    (tmp_path / "cyclic.p").write_bytes(pickle.dumps(cyclic))
    grown: list = ["x"] * 10
    for _ in range(9):  # 10^10 objects once expanded, nested 10 deep
        grown = [grown] * 10
    (tmp_path / "laughs.p").write_bytes(pickle.dumps(grown))
    score = ["score", "vqa-jsonl:test", "--path", data, "--predictions"]
    results = in_parallel(
        [
            (*score, deep, "--out", tmp_path / "deep"),
            (*score, nested, "--out", tmp_path / "nested"),
            (*score, separators, "--out", tmp_path / "separators"),
            ("data", "convert-refs", tmp_path / "cyclic.p", tmp_path / "cyclic.json"),
            ("data", "convert-refs", tmp_path / "laughs.p", tmp_path / "laughs.json"),
        ]
    )
    (c1, _, e1), (c2, _, e2), (c3, _, e3), (c4, _, e4), (c5, _, e5) = results
    one_line(c1, e1, EXIT_DATA, f"{deep}:2: JSON nested deeper than 64 levels")
    one_line(c2, e2, EXIT_DATA, f"{nested}:1: JSON nested deeper than 64 levels")
    assert c3 == 0, e3
    one_line(c4, e4, EXIT_DATA, "cyclic.p: an object contains itself")
    one_line(c5, e5, EXIT_DATA, "laughs.p: it expands to more than")
    assert not (tmp_path / "cyclic.json").exists() and not (tmp_path / "laughs.json").exists()
    assert len(pickle.dumps(grown)) < 1000


def test_data_check_on_hostile_paths_and_text_only_records(tmp_path):
    mix = llava_dir(
        tmp_path / "mix",
        [
            {"id": "a", "image": "green.png", "conversations": turns("<image>\nWhat color?", "Green.")},
            {"id": "t1", "conversations": turns("Write a haiku.", "Leaves fall...", "Another?", "Snow.")},
            {"id": "t2", "conversations": turns("Hello", "Hi there")},
        ],
    )
    empty = llava_dir(tmp_path / "empty", [{"id": "t", "conversations": turns("Say nothing.", "  ")}])
    nul = vqa_dir(tmp_path / "nul", [{"id": 0, "image": "red\u0000.png", "question": "q", "answer": "a"}])
    escape = llava_dir(
        tmp_path / "escape", [{"id": "e", "image": "\x1b[31mred.png", "conversations": turns("<image>\nQ", "A")}]
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("RGB", (8, 8)).save(outside / "private.png")
    linked = llava_dir(
        tmp_path / "linked", [{"id": "l", "image": "x/private.png", "conversations": turns("<image>\nQ", "A")}]
    )
    (linked.parent / "x").symlink_to(outside, target_is_directory=True)
    folder = tmp_path / "folder" / "test" / "cls"
    folder.mkdir(parents=True)
    (folder / "bad\x1b[2Jname.png").write_bytes(b"not an image")
    results = in_parallel(
        [
            ("data", "check", "llava-json:train", "--path", mix),
            ("data", "check", "llava-json:train", "--path", empty),
            ("data", "check", "vqa-jsonl:test", "--path", nul),
            ("data", "check", "llava-json:train", "--path", escape),
            ("data", "check", "llava-json:train", "--path", linked),
            ("data", "check", "image-folder:test", "--path", tmp_path / "folder"),
        ]
    )
    (c1, o1, e1), (c2, o2, e2), (c3, o3, e3), (c4, o4, e4), (c5, o5, e5), (c6, o6, e6) = results
    assert c1 == 0 and "3 items over 1 images, all readable (and 2 text-only records, their text checked)" in e1, e1
    assert "bad record: llava-json/t (text-only): every assistant turn is empty" in o2
    one_line(c2, e2, EXIT_DATA, "1 of 0 images and 1 text-only records cannot be used")
    one_line(c3, e3, EXIT_DATA, "image path 'red\\x00.png' has a control character")
    one_line(c4, e4, EXIT_DATA, "has a control character")
    one_line(c5, e5, EXIT_DATA, "leaves the image directory", "through a symbolic link", "VLMLAB_IMAGE_ROOTS")
    one_line(c6, e6, EXIT_DATA, "1 of 1 images cannot be used")
    assert "bad image: " in o6 and "\\x1b[2Jname.png" in o6
    for out, err in ((o1, e1), (o2, e2), (o3, e3), (o4, e4), (o5, e5), (o6, e6)):
        assert "\x00" not in out + err and "\x1b" not in out + err
    # the person running vlmlab (not the data file) may let the links lead into a shared copy
    code, _, err = cli("data", "check", "llava-json:train", "--path", linked, env={"VLMLAB_IMAGE_ROOTS": str(outside)})
    assert code == 0, err


def test_study_files_and_long_prompts_end_in_one_line(trained, tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    spec = {"name": "s", "question": "<b>q</b>?", "base": "easy-vqa-tiny", "factors": {}}
    spec["factors"] = {"llm": {"keys": ["model.llm.id"], "levels": {"a": {"model.llm.id": "llama1-tiny"}}}}
    (study / "study.yaml").write_text(yaml.safe_dump(spec))
    (study / "control.json").write_text("{}")
    (study / "results.parquet").write_bytes(b"PAR1 not really parquet")
    (study / "summary.csv").write_text("variant\na\n")
    files = {n: hashlib.sha256((study / n).read_bytes()).hexdigest() for n in ("results.parquet", "summary.csv")}
    (study / "complete.json").write_text(json.dumps({"files": files}))  # vouches for the unreadable file
    long_q = copy_run(trained, tmp_path / "long-question")  # data.eval may change freely: no forging needed
    question = "what colour is it? " * 63_000  # 1.2 MB
    data = vqa_dir(tmp_path / "long", [{"id": 0, "image": "red.png", "question": question, "answer": "red"}])
    mix = llava_dir(
        tmp_path / "long-mix",
        [{"id": "m", "image": "green.png", "conversations": turns(f"<image>\n{question}", "Green.")}],
    )
    cut = copy_run(trained, tmp_path / "cut")
    for run, source in (
        (long_q, {"task": "vqa-jsonl", "split": "test", "path": str(data)}),
        (cut, {"task": "llava-json", "split": "train", "path": str(mix)}),
    ):
        raw = yaml.safe_load(run.config.read_text())
        raw["data"]["eval"] = [source]
        run.config.write_text(yaml.safe_dump(raw))
    limited = copy_run(trained, tmp_path / "limited")
    results = in_parallel(
        [
            ("report", study),
            ("analyze", study),
            ("eval", long_q.path),
            ("eval", cut.path),
            ("eval", limited.path, "--limit", "2"),
        ]
    )
    (c1, _, e1), (c2, _, e2), (c3, _, e3), (c4, _, e4), (c5, _, e5) = results
    one_line(c1, e1, EXIT_DATA, f"{study / 'results.parquet'}: not readable study results")
    one_line(c2, e2, EXIT_DATA, f"{study / 'results.parquet'}: not readable study results")
    one_line(c3, e3, EXIT_DATA, "item test-0's prompt is", "more than the model's context of 512", "vqa-jsonl refuses")
    assert c4 == 0 and "1 prompts longer than the model's context (512 tokens less 4 for the answer) cut" in e4, e4
    notes = json.loads(cut.metrics().read_text())["tasks"]["llava-json"]["loader"]
    assert notes["prompts_cut_to_context"] == {"items": 1, "context": 512, "first": "m"}
    assert c5 == 0, e5
    assert json.loads(limited.metrics().read_text())["overall"]["n"] == 2  # --limit applies to data.eval


def test_scoring_prefixes_numeric_ids_and_letterboxed_slivers(tmp_path):
    from vlmlab.data.images import letterbox_geometry, project_box, to_array, unproject_box

    data = vqa_dir(
        tmp_path / "data", [{"id": i, "image": "red.png", "question": "color?", "answer": "red"} for i in range(5)]
    )
    complete = tmp_path / "complete.jsonl"
    complete.write_text("".join(json.dumps({"item_id": f"test-{i}", "prediction": "red"}) + "\n" for i in range(5)))
    numeric = tmp_path / "numeric.jsonl"
    numeric.write_text("".join(json.dumps({"item_id": i, "prediction": "red"}) + "\n" for i in range(5)))
    score = ["score", "vqa-jsonl:test", "--path", data, "--predictions"]
    (c1, _, e1), (c2, _, e2) = in_parallel(
        [(*score, complete, "--out", tmp_path / "a", "--limit", "2"), (*score, numeric, "--out", tmp_path / "b")]
    )
    assert c1 == 0, e1
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["overall"] == {"accuracy": 1.0, "n": 2} and metrics["scored"]["answers_passed_over"] == 3
    one_line(c2, e2, EXIT_DATA, "item_id 0 is a bare number; vlmlab's ids are strings such as 'test-0'")
    # a 3x640 sliver under letterbox-square at 64 px is a 1x64 strip (it was 0 px wide: ZeroDivisionError)
    assert letterbox_geometry(3, 640, 64) == (0.1, 31, 0)
    assert to_array(Image.new("RGB", (3, 640), (255, 0, 0)), 64, "letterbox-square")[:, 31].mean(0).tolist() == [
        255,
        0,
        0,
    ]
    box = project_box([0, 0, 3, 640], 3, 640, 64, "letterbox-square")
    assert unproject_box(box, 3, 640, 64, "letterbox-square") == pytest.approx([0, 0, 3, 640])


def test_report_markdown_escapes_user_text(tmp_path):
    import pandas as pd

    from vlmlab.render.document import Report, Section

    report = Report("study <img src=x onerror=alert(1)>", "question: [click](http://evil) ![t](http://track/x.png)")
    section = report.add(Section("items"))
    section.text("the `<image>` token stays code; <script>alert(1)</script> does not run")
    section.table(pd.DataFrame({"question": ["<b>what</b> | is\nit? ![x](http://track)"], "n": [3]}))
    section.text("**bold** stays")
    md = report.to_markdown(tmp_path / "figures", tmp_path)
    outside_code = re.sub(r"`[^`\n]*`", "", md)
    assert re.search(r"(?<!\\)[<\[]", outside_code) is None, md  # every < and [ outside code spans is escaped
    assert "\\<img src=x" in md and "\\<script\\>" in md
    assert "`<image>`" in md and "**bold** stays" in md
    assert "| \\<b\\>what\\</b\\> \\| is it? \\!\\[x\\](http://track) | 3 |" in md


def test_study_check_shows_progress_and_stays_fast(tmp_path):
    """`study --check` on 200 variants x 3 seeds: each phase is a named progress step, and it takes seconds
    (600 x 3 is measured in benchmarks/RESULTS.md)."""
    base = json.loads(json.dumps(TINY))
    spec = {
        "name": "big",
        "question": "q?",
        "base": base,
        "factors": {
            "lr": {
                "keys": ["train.stages.1.lr.llm"],
                "levels": {f"l{i}": {"train.stages.1.lr.llm": 1e-4 * (i + 1)} for i in range(20)},
            },
            "wd": {
                "keys": ["train.weight_decay"],
                "levels": {f"w{i}": {"train.weight_decay": 0.01 * i} for i in range(10)},
            },
        },
        "seeds": [0, 1, 2],
    }
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(spec))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "vlmlab", "study", str(path), "--check", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != "VLMLAB_NO_PROGRESS"},
    )
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    for step in ("resolving 600 variant runs", "control check: held-constant keys", "control check: data order"):
        assert step in proc.stderr, proc.stderr
    assert "control check passed: 200 variants x 3 seeds" in proc.stderr
    assert seconds < 240, seconds
