"""Task YAMLs: a format + prompt + metric + categories, no Python."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from vlmlab.data.tasks.declarative import DeclarativeTask, read_spec
from vlmlab.errors import ConfigError
from vlmlab.registry import TASKS


def _jsonl(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    Image.new("RGB", (16, 16), (255, 0, 0)).save(root / "a.png")
    recs = [
        {"id": 0, "image": "a.png", "question": "what colour?", "answer": "red", "category": "color"},
        {"id": 1, "image": "a.png", "question": "the red square", "answer": "[0, 0, 99, 99]", "category": "ground"},
    ]
    (root / "test.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return root


def _task(tmp_path, body: str) -> DeclarativeTask:
    file = tmp_path / "t.yaml"
    file.write_text(body)
    spec = read_spec(file)
    return type(spec.task, (DeclarativeTask,), {"spec": spec})()


def test_yaml_task_filters_prompts_and_scores_boxes(tmp_path):
    root = _jsonl(tmp_path)
    task = _task(
        tmp_path,
        f"""
task: my-grounding
format: vqa-jsonl
path: {root}
prompt: "{{question}} Answer as a box."
answer_type: box
metric: box_iou@0.5
categories: [ground]
""",
    )
    items = task.load("test")
    assert [it.item_id for it in items] == ["test-1"]
    assert items[0].task == "my-grounding" and items[0].question == "the red square Answer as a box."
    assert task.score("[1, 1, 98, 98]", items[0]) == 1.0
    assert task.score("[60, 60, 99, 99]", items[0]) == 0.0
    assert task.score("red", items[0]) == 0.0  # unparsable: a format error scores 0


@pytest.mark.parametrize(
    "body,message",
    [
        ("task: x\nformat: vqa-jsonl\nmetrc: exact_match\n", "t.yaml: metrc: unknown key"),
        ("task: x\nformat: vqa-jsonl\nmetric: bleu\n", "t.yaml: metric: unknown metric 'bleu'"),
        ("task: x\nformat: vqa-jsonl\nprompt: 'Q:'\n", "t.yaml: prompt: the prompt template must contain {question}"),
    ],
)
def test_bad_task_yaml_names_file_and_key(tmp_path, body, message):
    with pytest.raises(ConfigError) as exc:
        _task(tmp_path, body)
    assert message in str(exc.value)


def test_builtin_shapes_tasks_split_families():
    for task_id, cats in (("shapes-perception", {"color", "shape", "exist"}), ("shapes-grounding", {"ground"})):
        spec = TASKS.get(task_id).spec
        assert spec.format == "shapes-world" and set(spec.categories) == cats


def test_user_task_dir_adds_a_task_without_python(tmp_path):
    root = _jsonl(tmp_path)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "colours.yaml").write_text(f"task: my-colours\nformat: vqa-jsonl\npath: {root}\ncategories: [color]\n")
    env = dict(os.environ, VLMLAB_TASK_DIRS=str(tasks), COLUMNS="200")
    out = subprocess.run([sys.executable, "-m", "vlmlab", "tasks"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "my-colours" in out.stdout + out.stderr
