"""External variants: answers from files analysed beside trained variants, and `vlmlab compare`. The same answers
trained in-house or read from a file give the same numbers in every analysis that reads records."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from vlmlab.analysis.run import analyze_study
from vlmlab.cli import main
from vlmlab.report.study_report import build_report
from vlmlab.study.runner import run_study

ANALYSES = ["factor-effects", "overlap", "calibration", "exclusive-capabilities"]
LLM = {"keys": ["model.llm.id"], "levels": {"gen1": {"model.llm.id": "llama1-tiny"}}}


def _spec(path, **fields):
    path.write_text(yaml.safe_dump({"name": path.stem, **fields}, sort_keys=False))
    return path


def _answers(records: pd.DataFrame, path, confidence=True):
    with open(path, "w") as fh:
        for r in records.itertuples():
            rec = {"item_id": r.item_id, "prediction": r.prediction}
            if confidence:
                rec["confidence"] = r.confidence
            fh.write(json.dumps(rec) + "\n")
    return path


def _result(study_dir, name):
    return json.loads((study_dir / "analysis" / f"{name}.json").read_text())["result"]


def _frame(result, key):
    f = result[key]["frame"]
    return pd.DataFrame(f["rows"], columns=f["columns"])


@pytest.fixture(scope="module")
def in_house(tmp_path_factory):
    """A trained study: gen1 vs gen3 on the tiny config, one seed, no blind pass."""
    from conftest import TINY

    root = tmp_path_factory.mktemp("external")
    factor = {"keys": ["model.llm.id"], "levels": {**LLM["levels"], "gen3": {"model.llm.id": "llama3-tiny"}}}
    spec = _spec(root / "inhouse.yaml", base=TINY, factors={"llm": factor}, eval={"blind": False}, analyses=ANALYSES)
    run_study(spec, root / "inhouse")
    analyze_study(root / "inhouse")
    return root


def test_an_external_variant_gives_the_numbers_of_the_same_answers_trained_in_house(in_house):
    from conftest import TINY

    root = in_house
    gen3 = pd.read_parquet(root / "inhouse" / "variants" / "gen3" / "seed-0" / "predictions.parquet")
    answers = _answers(gen3, root / "gen3-answers.jsonl")
    spec = _spec(
        root / "mixed.yaml",
        base=TINY,
        factors={"llm": LLM},
        external={"gen3": {"about": "gen3's answers, from a file", "answers": {"easy-vqa": answers.name}}},
        eval={"blind": False},
        analyses=[*ANALYSES, "claims"],
    )
    run_study(spec, root / "mixed")
    analyze_study(root / "mixed")

    a, b = root / "inhouse", root / "mixed"
    results_a, results_b = pd.read_parquet(a / "results.parquet"), pd.read_parquet(b / "results.parquet")
    # the same rows, columns and values (gen3 is a level of `llm`), but `stopped`: a file does not say whether the
    # model emitted its stop token
    assert results_b.loc[results_b["variant"] == "gen3", "stopped"].isna().all()
    pd.testing.assert_frame_equal(results_a.drop(columns="stopped"), results_b.drop(columns="stopped"))
    pd.testing.assert_frame_equal(pd.read_csv(a / "summary.csv"), pd.read_csv(b / "summary.csv"))
    for name in ANALYSES:  # every number, table and verdict of every analysis, exactly
        assert _result(a, name) == _result(b, name), name
    pair = _frame(_result(b, "overlap"), "pairs").iloc[0]
    assert (pair["a"], pair["b"], pair["n"]) == ("gen1", "gen3", 24)
    assert pair["both"] + pair["only_a"] + pair["only_b"] + pair["neither"] == 24

    control = json.loads((b / "control.json").read_text())
    assert control["external"]["gen3"]["levels"] == {"llm": "gen3"}
    assert "recipe, training data, data order" in control["external"]["gen3"]["not_verified"]
    html, md = build_report(b)
    text = md.read_text()
    assert "**Not verified for the external variants** (`gen3`)" in text
    assert "| gen3 | gen3's answers, from a file | llm=gen3 | gen3-answers.jsonl (" in text
    assert "| llm | gen3 | external answers (no config) |" in text
    # the seed claims rest on trained runs and the control check: judged on the trained variants (one rung here)
    assert _result(b, "claims")["claims"]["frame"]["rows"] == []
    assert "The external variants (`gen3`) are not in this section: it rests on trained runs" in text


def test_compare_of_two_runs_and_of_two_answer_files_gives_the_study_s_overlap(in_house, capsys):
    root = in_house
    runs = [root / "inhouse" / "variants" / v / "seed-0" for v in ("gen1", "gen3")]
    assert main(["compare", f"gen1={runs[0]}", f"gen3={runs[1]}", "--out", str(root / "cmp-runs")]) == 0
    files = [_answers(pd.read_parquet(r / "predictions.parquet"), root / f"{r.parent.name}.jsonl") for r in runs]
    argv = ["compare", str(files[0]), str(files[1]), "--task", "easy-vqa:test", "--limit", "24"]
    assert main(argv + ["--out", str(root / "cmp-files")]) == 0
    err = capsys.readouterr().err
    expected = _frame(_result(root / "inhouse", "overlap"), "pairs")
    for out in ("cmp-runs", "cmp-files"):
        pairs = _frame(_result(root / out, "overlap"), "pairs")
        pd.testing.assert_frame_equal(pairs, expected)
        assert _result(root / out, "calibration") == _result(root / "inhouse", "calibration")
        assert _result(root / out, "exclusive-capabilities") == _result(root / "inhouse", "exclusive-capabilities")
        deltas = _result(root / out, "factor-effects")["tables"]["model"]["frame"]
        assert deltas["rows"] == _result(root / "inhouse", "factor-effects")["tables"]["llm"]["frame"]["rows"]
        assert (root / out / "report.html").is_file()
    r = expected.iloc[0]
    assert f"gen3 vs gen1: {r['verdict']} (only gen3 {r['only_b']}, only gen1 {r['only_a']}" in err
    spec = yaml.safe_load((root / "cmp-files" / "compare.yaml").read_text())
    assert spec["analyses"] == ["factor-effects", "overlap", "exclusive-capabilities", "calibration"]
    report = (root / "cmp-files" / "report.md").read_text()
    assert "## Training" not in report and "No variant was trained in this study" in report


def test_external_spec_mistakes_are_one_line(tmp_path, capsys):
    from conftest import TINY

    (tmp_path / "a.jsonl").write_text('{"item_id": "x", "prediction": "y"}\n')
    cases = [
        (
            {"base": TINY, "factors": {"llm": LLM}, "external": {"x": {"gqa": "a.jsonl"}}},
            "external.x.answers.gqa: names",
        ),
        ({"base": TINY, "factors": {"llm": LLM}, "external": {"x": {"easy-vqa": "b.jsonl"}}}, "b.jsonl: not found"),
        ({"base": TINY, "factors": {"llm": LLM}, "external": {"gen1": {"easy-vqa": "a.jsonl"}}}, "trained variant"),
        (
            {
                "base": TINY,
                "factors": {"llm": LLM},
                "external": {"x": {"answers": {"easy-vqa": "a.jsonl"}, "levels": {"llm": "gen1"}}},
            },
            "external.x.levels: stands at the same levels as gen1",
        ),
        (
            {
                "base": TINY,
                "factors": {"llm": LLM},
                "external": {"x": {"answers": {"easy-vqa": "a.jsonl"}, "levels": {"vision": "a"}}},
            },
            "external.x.levels.vision: no factor 'vision' (factors: llm)",
        ),
        ({"base": TINY, "factors": {"llm": LLM}, "external": {"x": {"about": "y"}}}, "give `answers` (task: file)"),
        (
            {"base": TINY, "factors": {"llm": LLM}, "external": {"x": {"easy-vqa": "a.jsonl", "fmt": "x"}}},
            "external.x.answers.fmt: names no task the study evaluates",
        ),
        ({"external": {"x": {"easy-vqa": "a.jsonl"}}}, "eval.tasks: name the tasks"),
        ({"factors": {"llm": LLM}}, "base: a study that trains variants needs a base config"),
    ]
    for fields, needle in cases:
        spec = _spec(tmp_path / "s.yaml", **fields)
        code = main(["study", str(spec), "--check"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and needle in err, err


def test_a_compare_of_answer_files_scores_them_and_refuses_analyses_that_probe_weights(tmp_path, capsys):
    """Two answer files on six easy-VQA items: A right on the first four, B on the first two."""
    from vlmlab.config import DataSource
    from vlmlab.data.sources import load_source

    _, items = load_source(DataSource(task="easy-vqa", split="test", limit=6), "t")
    for name, right in (("a", 4), ("b", 2)):
        with open(tmp_path / f"{name}.jsonl", "w") as fh:
            for k, item in enumerate(items):
                fh.write(
                    json.dumps({"item_id": item.item_id, "prediction": item.answer if k < right else "zzz"}) + "\n"
                )
    argv = ["compare", f"A={tmp_path / 'a.jsonl'}", f"B={tmp_path / 'b.jsonl'}", "--task", "easy-vqa:test"]
    assert main([*argv, "--limit", "6", "--out", str(tmp_path / "c")]) == 0
    pair = _frame(_result(tmp_path / "c", "overlap"), "pairs").iloc[0]
    assert (pair["both"], pair["only_a"], pair["only_b"], pair["neither"]) == (2, 2, 0, 2)
    summary = pd.read_csv(tmp_path / "c" / "summary.csv")
    row = summary[(summary["variant"] == "A") & (summary["category"] == "all")].iloc[0]
    assert row["accuracy"] == pytest.approx(4 / 6) and row["seeds"] == 1 and row["n"] == 6
    spec = yaml.safe_load((tmp_path / "c" / "compare.yaml").read_text())
    assert "calibration" not in spec["analyses"]  # no answer has a confidence
    capsys.readouterr()
    assert main(["analyze", str(tmp_path / "c"), "--only", "attention-profile"]) == 1
    err = capsys.readouterr().err
    assert "analysis attention-profile: it probes trained runs, and every variant of" in err
    assert main(["compare", f"A={tmp_path / 'a.jsonl'}", "--task", "easy-vqa:test", "--out", str(tmp_path / "d")]) == 2
    assert "compare: give two or more prediction sets (got 1)" in capsys.readouterr().err
