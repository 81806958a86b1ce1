"""Property-based bad input: mutated configs, dataset records and study specs end in one line, exit != 0, no output."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from _fuzz import FUZZ, JUNK, dotted, mutations, names_the_path, tally
from conftest import TINY
from vlmlab.cli import main
from vlmlab.lm import pretrain as pretrain_mod
from vlmlab.train import trainer as trainer_mod


class ReachedTraining(Exception):
    """A mutated config that is valid got as far as the first training stage (where the test stops it)."""


def _cli(capsys, argv) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def _assert_one_line(err: str, code: int) -> str:
    assert code != 0 and err, "a failure must say why"
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ----- configs: a key deleted, a value replaced by junk, an unknown key added ---------------------------------
@FUZZ
@given(case=mutations(TINY))
def test_fuzzed_config_is_one_line_naming_the_key(case, capsys, monkeypatch):
    raw, kind, path = case

    def stop(*args, **kwargs):
        raise ReachedTraining

    monkeypatch.setattr(trainer_mod, "stage_runner", stop)
    monkeypatch.setattr(pretrain_mod, "ensure_backbone", stop)  # a rung with `init: pretrained` is valid too
    capsys.readouterr()  # start clean: an accepted case stops without reading its output
    with tempfile.TemporaryDirectory() as tmp:
        config, out = Path(tmp) / "c.yaml", Path(tmp) / "run"
        config.write_text(yaml.safe_dump(raw))
        try:
            code, err = _cli(capsys, ["train", str(config), "--out", str(out)])
        except ReachedTraining:
            tally("config", "accepted (valid after the change)")
            return
        line = _assert_one_line(err, code)
        assert names_the_path(line, path), f"{kind} {dotted(path)}: {line}"
        assert not out.exists(), f"{kind} {dotted(path)} left {sorted(p.name for p in out.iterdir())}"
        tally("config", f"rejected, exit {code}")


@FUZZ
@given(
    text=st.one_of(
        JUNK.filter(lambda v: not isinstance(v, dict)).map(yaml.safe_dump),
        st.sampled_from(["a: [unclosed", "\tmodel: 1", "- a\nb: c", "{", "model: {vision: }}"]),
    )
)
def test_config_that_is_not_a_mapping(text, capsys, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("top")
    config = tmp / "c.yaml"
    config.write_text(text)
    code, err = _cli(capsys, ["train", str(config), "--out", str(tmp / "run")])
    line = _assert_one_line(err, code)
    assert str(config) in line or "config" in line, line
    assert not (tmp / "run").exists()
    tally("config (not a mapping)", f"rejected, exit {code}")


# ----- dataset records (vqa-jsonl): fields missing or mistyped, images missing, broken, outside the root ------
RECORD = {"id": 0, "image": "good.png", "question": "what color is the shape?", "answer": "red"}
IMAGES = {  # name -> whether it is a readable image inside the dataset dir
    "good.png": True,
    "sub/../good.png": True,
    "missing.png": False,
    "truncated.png": False,
    "text.png": False,
    "../outside.png": False,
    "/etc/hostname": False,
    "sub": False,
    "": False,
}


@st.composite
def jsonl_records(draw):
    """(lines, expected_valid): records mutated one way each, plus raw junk lines."""
    lines, valid, ids = [], True, set()
    for i in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["ok", "drop", "mistype", "image", "raw", "duplicate-id"]))
        rec = dict(RECORD, id=i)
        if kind == "raw":
            line = draw(st.sampled_from(["not json", "[1, 2]", "42", '{"id": 1,', "null"]))
            lines.append(line)
            valid = False
            continue
        if kind == "drop":
            del rec[draw(st.sampled_from(sorted(RECORD)))]
        elif kind == "mistype":
            rec[draw(st.sampled_from(sorted(RECORD)))] = draw(
                st.one_of(st.none(), st.booleans(), st.floats(), st.lists(st.integers(), max_size=2), st.just({"a": 1}))
            )
        elif kind == "image":
            rec["image"] = draw(st.sampled_from(sorted(IMAGES)))
        elif kind == "duplicate-id" and ids:
            rec["id"] = draw(st.sampled_from(sorted(ids)))
        ok = all(k in rec and isinstance(rec[k], (str, int)) and not isinstance(rec[k], bool) for k in RECORD)
        ok = ok and IMAGES.get(str(rec["image"]), False) and str(rec["id"]) not in ids  # ids 1 and "1" are one id
        valid = valid and ok
        if ok:
            ids.add(str(rec["id"]))
        lines.append(json.dumps(rec))
    return lines, valid


def _dataset_dir(tmp: Path) -> Path:
    root = tmp / "data"
    (root / "sub").mkdir(parents=True)
    Image.new("RGB", (16, 16), (255, 0, 0)).save(root / "good.png")
    good = (root / "good.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "text.png").write_text("not an image")
    Image.new("RGB", (16, 16)).save(tmp / "outside.png")
    return root


@FUZZ
@given(case=jsonl_records())
def test_fuzzed_dataset_records_are_one_line_naming_the_file(case, capsys):
    lines, valid = case
    with tempfile.TemporaryDirectory() as tmp:
        root = _dataset_dir(Path(tmp))
        file = root / "test.jsonl"
        file.write_text("\n".join(lines) + "\n")
        code, err = _cli(capsys, ["data", "check", "vqa-jsonl:test", "--path", str(file)])
        if valid:
            assert code == 0, err
            tally("dataset records", "accepted (all valid)")
            return
        line = _assert_one_line(err, code)
        assert str(file) in line or str(root) in line or "/etc/hostname" in line, line
        tally("dataset records", f"rejected, exit {code}")


# ----- study specs ---------------------------------------------------------------------------------------------
SPEC = {
    "name": "fuzz",
    "question": "q",
    "base": copy.deepcopy(TINY),
    "seeds": [0],
    "factors": {
        "llm": {
            "keys": ["model.llm.id"],
            "levels": {"gen1": {"model.llm.id": "llama1-tiny"}, "gen3": {"model.llm.id": "llama3-tiny"}},
        }
    },
    "datasets": {"sw": {"seed": 0, "n": 40, "size": 32}},
    "eval": {"blind": True, "perturb": ["noise:0.1"]},
    "analyses": ["factor-effects", {"id": "calibration", "n_bins": 10}],
}


def _spec_paths_outside_base(case) -> bool:
    return case[2][0] != "base"  # the base config is fuzzed above


@FUZZ
@given(case=mutations(SPEC).filter(_spec_paths_outside_base))
def test_fuzzed_study_spec_is_one_line_naming_the_key(case, capsys):
    raw, kind, path = case
    with tempfile.TemporaryDirectory() as tmp:
        spec, out = Path(tmp) / "study.yaml", Path(tmp) / "study"
        spec.write_text(yaml.safe_dump(raw))
        code, err = _cli(capsys, ["study", str(spec), "--check", "--out", str(out)])
        assert not out.exists()
        if code == 0:
            tally("study specs", "accepted (valid after the change)")
            return
        line = _assert_one_line(err, code)
        assert names_the_path(line, path), f"{kind} {dotted(path)}: {line}"
        tally("study specs", f"rejected, exit {code}")
