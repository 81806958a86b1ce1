"""The layouts are the only namers: no module but `run_layout` (a run and its checkpoints) and `study.layout` (a
study) spells one of their files' names; everything else asks `RunDir` / `StudyDir`."""

from __future__ import annotations

import ast
from pathlib import Path

import vlmlab
from vlmlab.run_layout import MANIFEST, OPTIMIZER, STATE, WEIGHTS, RunDir
from vlmlab.study.layout import StudyDir

PACKAGE = Path(vlmlab.__file__).parent
NAMERS = {"run_layout.py", "study/layout.py"}
# (module, name): the same text meaning something else
OTHER_MEANINGS = {
    ("config.py", "tensorboard"),  # a tracker's id in `train.trackers`
    ("train/trackers.py", "tensorboard"),  # the tracker id -> the package it needs
    ("train/vision_cache.py", "metrics.json"),  # a tower cache entry's own layout, named in that module
}


def _names() -> set[str]:
    run, study = RunDir("r"), StudyDir("s")
    # (not `tokenizer`: the word names a part's field and an export's folder too)
    paths = [getattr(run, a) for a in ("config", "checkpoints", "train_log", "environment", "train_info")]
    paths += [run.done, run.tensorboard, run.mlruns, run.predictions(), run.metrics()]
    paths += [getattr(study, a) for a in ("spec", "control", "results", "summary", "provenance", "complete")]
    paths += [study.report_html, study.report_md]
    return {p.name for p in paths} | {WEIGHTS, OPTIMIZER, STATE, MANIFEST, "final"}


def test_only_the_layouts_spell_a_run_or_study_file_name():
    names = _names()
    assert {"train.json", "predictions.parquet", "complete.json", "trainer_state.json"} <= names
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if module in NAMERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names and (module, node.value) not in OTHER_MEANINGS:
                found.append(f"{module}:{node.lineno} {node.value!r}")
    assert not found, "ask RunDir / StudyDir instead: " + ", ".join(found)


def test_the_rule_catches_a_spelled_name(tmp_path):
    source = 'out = run / "train.json"\n'
    hits = [n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant) and n.value in _names()]
    assert hits == ["train.json"]
