"""A run, study, import or data directory from someone else, tried as a hostile user would (docs/reliability.md,
"Threat model"): each case is built in a temp dir and run through the CLI in a fresh `python -m vlmlab` process,
asserting that no code ran (a module or pickle that would write a marker file), no file outside changed, and the
refusal is one line with the documented exit code. Fresh processes cost ~5 s each, so each test runs its cases
side by side."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import TINY
from vlmlab.checkpoint import write_manifest
from vlmlab.errors import EXIT_CONFIG, EXIT_DATA
from vlmlab.runs import RunDir, training_fingerprint

MARKER = "code-ran.marker"  # what hostile code would write; its absence is the proof that none ran


def cli(*argv: str, env: dict | None = None, timeout: int = 300) -> tuple[int, str, str]:
    """`python -m vlmlab ARGV` in a fresh process: (exit code, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "vlmlab", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "VLMLAB_NO_PROGRESS": "1", **(env or {})},
    )
    return proc.returncode, proc.stdout, proc.stderr


def in_parallel(calls: list[tuple]) -> list[tuple[int, str, str]]:
    """Run `cli(*argv)` for each argv at once (3 at a time)."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(lambda argv: cli(*argv), calls))


def one_line(code: int, err: str, expected_code: int, *fragments: str) -> str:
    """Assert that the command ended in one `error:` line (after any progress lines it printed), no traceback, the
    exit code and the fragments; return the line."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    assert code == expected_code, (code, err)
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def snapshot(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` (links not followed): to prove nothing changed."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _fast_config(tmp: Path) -> Path:
    raw = json.loads(json.dumps(TINY))
    for stage, steps in zip(raw["train"]["stages"], (1, 2)):
        stage["max_steps"] = steps
    raw["train"]["checkpoint_every"] = 1
    raw["data"]["eval"][0]["limit"] = 4
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(config, run): a tiny run trained once; each test works on copies."""
    from vlmlab.cli import main

    tmp = tmp_path_factory.mktemp("trained")
    config = _fast_config(tmp)
    assert main(["train", str(config), "--out", str(tmp / "run"), "--no-eval"]) == 0
    return config, tmp / "run"


def copy_run(trained, dest: Path) -> RunDir:
    shutil.copytree(trained[1], dest, symlinks=True)
    return RunDir(dest)


def forge(run: RunDir, change) -> None:
    """Edit the run's config and make the directory consistent again, as an attacker can: a new training
    fingerprint and a rewritten manifest (both unkeyed hashes anyone can recompute)."""
    raw = yaml.safe_load(run.config.read_text())
    change(raw)
    run.config.write_text(yaml.safe_dump(raw))
    state = json.loads((run.final / "trainer_state.json").read_text())
    state["training_fingerprint"] = training_fingerprint(raw)
    (run.final / "trainer_state.json").write_text(json.dumps(state))
    write_manifest(run.final)


# ----- 1. nothing a directory holds can run code ------------------------------------------------------------
def _hostile_checkpoints(root: Path, marker: Path) -> tuple[Path, Path]:
    """Two HF checkpoints that would write `marker` when loaded: one through its own Python (auto_map), one through
    its pickle weights."""
    remote, pickled = root / "remote-code", root / "pickled"
    remote.mkdir(parents=True)
    (remote / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('remote code ran')\n")
    auto_map = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (remote / "config.json").write_text(json.dumps({"model_type": "evil-vlmlab", "auto_map": auto_map}))
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 32}))

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('pickle ran')",))

    (pickled / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": Evil()}))
    return remote, pickled


def test_a_run_directory_cannot_run_code(trained, tmp_path):
    marker = tmp_path / MARKER
    remote, pickled = _hostile_checkpoints(tmp_path / "hostile", marker)
    runs = {}
    for name, llm in {
        "asks-remote-code": {"id": "hf", "path": str(remote), "trust_remote_code": True},
        "asks-pickle": {"id": "hf", "path": str(pickled), "allow_pickle": True},
        "remote-code": {"id": "hf", "path": str(remote)},  # asks for nothing: the checkpoint's auto_map is not run
        "pickle": {"id": "hf", "path": str(pickled)},
    }.items():
        runs[name] = copy_run(trained, tmp_path / name)  # forged, but consistent in itself
        forge(runs[name], lambda c, llm=llm: c["model"].update(llm=llm))
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    results = in_parallel([("eval", run.path) for run in runs.values()] + [("train", tagged)])
    (c1, _, e1), (c2, _, e2), (c3, _, e3), (c4, _, e4), (c5, _, e5) = results
    one_line(
        c1,
        e1,
        EXIT_CONFIG,
        f"{runs['asks-remote-code'].config}: model.llm.trust_remote_code: true asks to run Python shipped with {remote}",
        "vlmlab never takes that from a file: pass --trust-remote-code on the command line if you trust it",
    )
    one_line(c2, e2, EXIT_CONFIG, "model.llm.allow_pickle: true asks to load pickle weights", "pass --allow-pickle")
    one_line(c3, e3, EXIT_DATA, f"{remote}: cannot load checkpoint")
    one_line(c4, e4, EXIT_DATA, "pytorch_model.bin: pickle weights can run code when loaded", "--allow-pickle")
    one_line(c5, e5, EXIT_CONFIG, f"{tagged}: line 1 not valid YAML")
    assert not marker.exists()


def test_the_config_check_cannot_be_skipped_by_deleting_the_fingerprint(trained, tmp_path):
    deleted = copy_run(trained, tmp_path / "deleted")
    state_file = deleted.final / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["training_fingerprint"]
    state_file.write_text(json.dumps(state))
    forged = copy_run(trained, tmp_path / "forged")  # ... and the manifest rewritten to match
    (forged.final / "trainer_state.json").write_text(json.dumps(state))
    write_manifest(forged.final)
    (code, _, err), (code2, _, err2) = in_parallel([("eval", deleted.path), ("eval", forged.path)])
    one_line(code, err, EXIT_DATA, "trainer_state.json does not match its sha256 in manifest.json")
    one_line(code2, err2, EXIT_DATA, "no training fingerprint, though the checkpoint's manifest vouches for this file")


def test_chat_templates_render_in_a_sandbox(trained, tmp_path):
    """transformers compiles chat templates in jinja2's ImmutableSandboxedEnvironment; vlmlab checks that before it
    renders one (its one rendering path, `TextEncoder.render`) and turns what the sandbox refuses into one line."""
    from dataclasses import replace

    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from transformers import PreTrainedTokenizerFast
    from transformers.utils.chat_template_utils import _compile_jinja_template

    from vlmlab.errors import UserError
    from vlmlab.models.llm.encoding import TextEncoder, sandboxed
    from vlmlab.models.llm.prompts import VICUNA

    assert isinstance(_compile_jinja_template(VICUNA.chat_template).environment, ImmutableSandboxedEnvironment)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(RunDir(trained[1]).tokenizer))
    marker = tmp_path / MARKER
    for hostile in (
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}",
        "{% set x = messages.append({'role': 'user', 'content': 'x'}) %}{{ messages }}",  # no mutation either
    ):
        text = TextEncoder(tokenizer, replace(VICUNA, chat_template=hostile), 0, tokenizer.eos_token_id or 0)
        with pytest.raises(UserError, match=r"model.llm: the vicuna chat template failed to render \(SecurityError"):
            text.render_prompt("what is it?")
    assert not marker.exists()
    with pytest.raises(UserError, match="a chat template of 300,000 characters"):
        sandboxed("x" * 300_000)


# ----- 2. locks and writes never follow links ----------------------------------------------------------------
def test_locks_never_follow_a_link_nor_print_what_they_did_not_write(trained, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("SECRET-CONTENT do not truncate\n")
    before = snapshot(outside)
    linked = copy_run(trained, tmp_path / "linked")
    (linked.path / ".lock").unlink(missing_ok=True)
    (linked.path / ".lock").symlink_to(outside / "precious.txt")
    fifo = copy_run(trained, tmp_path / "fifo")
    (fifo.path / ".lock").unlink(missing_ok=True)
    os.mkfifo(fifo.path / ".lock")
    foreign = copy_run(trained, tmp_path / "foreign")
    (foreign.path / ".lock").write_text("\x1b[2J some other program's file\n")
    study = tmp_path / "study"
    study.mkdir()
    (study / ".lock").symlink_to(outside / "precious.txt")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "s",
                "question": "q?",
                "base": yaml.safe_load(trained[0].read_text()),
                "factors": {"llm": {"keys": ["model.llm.id"], "levels": {"a": {"model.llm.id": "llama1-tiny"}}}},
            }
        )
    )
    results = in_parallel(
        [("eval", linked.path), ("eval", fifo.path), ("eval", foreign.path), ("study", spec, "--out", study)]
    )
    for (code, out, err), what in zip(results, ("a symbolic link", "not a regular file", "something other", "link")):
        line = one_line(code, err, EXIT_DATA, "/.lock: not a vlmlab lock file", what)
        assert "SECRET" not in out + err and "\x1b" not in out + err and "other program" not in line
    assert snapshot(outside) == before and (foreign.path / ".lock").read_text().startswith("\x1b[2J")
    assert not linked.predictions().exists()


def test_writes_under_a_run_never_pass_through_a_link(trained, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "log.jsonl").write_text('{"keep": "me"}\n' * 3)
    before = snapshot(outside)
    log_link = copy_run(trained, tmp_path / "log-link")  # resume cuts the log back: never through a link
    log_link.train_log.unlink()
    log_link.train_log.symlink_to(outside / "log.jsonl")
    measured = copy_run(trained, tmp_path / "measured")  # a probe's record goes to measurements/: a link here
    measured.measurements.symlink_to(outside, target_is_directory=True)
    study = tmp_path / "study"  # a study whose variants/ leads elsewhere: no run is made (or locked) there
    study.mkdir()
    (study / "variants").symlink_to(outside, target_is_directory=True)
    spec = tmp_path / "spec.yaml"
    factor = {"llm": {"keys": ["model.llm.id"], "levels": {"a": {"model.llm.id": "llama1-tiny"}}}}
    spec.write_text(
        yaml.safe_dump(
            {"name": "s", "question": "q?", "base": yaml.safe_load(trained[0].read_text()), "factors": factor}
        )
    )
    (code, _, err), (code2, _, err2), (code3, _, err3) = in_parallel(
        [
            ("train", trained[0], "--out", log_link.path, "--resume"),
            ("attention", measured.path, "--n-probe", "2", "--batch-size", "2"),
            ("study", spec, "--out", study),
        ]
    )
    one_line(code, err, EXIT_DATA, f"{log_link.train_log}: a symbolic link")
    one_line(code2, err2, EXIT_DATA, f"{measured.measurements}: a symbolic link inside", "never writes through a link")
    one_line(code3, err3, EXIT_DATA, f"{study / 'variants'}: a symbolic link inside {study}")
    assert snapshot(outside) == before and sorted(p.name for p in outside.iterdir()) == ["log.jsonl"]


# ----- 3. integrity is not optional ------------------------------------------------------------------------------
def test_a_checkpoint_without_a_manifest_is_refused_or_used_once_and_recorded(trained, tmp_path):
    flipped = copy_run(trained, tmp_path / "flipped")
    (flipped.final / "manifest.json").unlink()
    weights = flipped.final / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01
    weights.write_bytes(bytes(data))
    unverified = copy_run(trained, tmp_path / "unverified")
    (unverified.final / "manifest.json").unlink()
    legacy = copy_run(trained, tmp_path / "legacy")  # written before manifests and fingerprints existed
    for ckpt in [legacy.final, *legacy.checkpoints.glob("step-*")]:
        (ckpt / "manifest.json").unlink()
    state = json.loads((legacy.final / "trainer_state.json").read_text())
    del state["training_fingerprint"]
    (legacy.final / "trainer_state.json").write_text(json.dumps(state))
    intact = copy_run(trained, tmp_path / "intact")
    results = in_parallel(
        [
            ("eval", flipped.path),
            ("eval", unverified.path, "--allow-unverified"),
            ("verify", legacy.path),
            ("verify", intact.path),
        ]
    )
    (code, _, err), (code2, _, err2), (code3, out3, err3), (code4, out4, err4) = results
    one_line(
        code, err, EXIT_DATA, f"{flipped.final}: no manifest.json", f"vlmlab verify {flipped.path} --write-manifest"
    )
    assert not flipped.predictions().exists()
    assert code2 == 0 and "--allow-unverified" in err2, err2
    assert json.loads(unverified.metrics().read_text())["provenance"]["unverified"] == [
        f"{unverified.final}: used without a manifest (--allow-unverified)"
    ]
    one_line(code3, err3, EXIT_DATA, "no manifest.json", "--write-manifest")
    assert code4 == 0, err4
    digest = "sha256:" + hashlib.sha256((intact.final / "manifest.json").read_bytes()).hexdigest()
    assert f"{intact.path}: verified; digest {digest}" in " ".join(err4.split())
    # the one-time path for a run written before manifests: then it evaluates, and its outputs say how it was vouched
    code, _, err = cli("verify", legacy.path, "--write-manifest")
    assert code == 0 and "wrote manifest.json" in err, err
    code, _, err = cli("eval", legacy.path)
    assert code == 0, err
    (provenance,) = json.loads(legacy.metrics().read_text())["provenance"]["unverified"]
    assert provenance.startswith(f"{legacy.final}: manifest written after training (")
    state = json.loads((legacy.final / "trainer_state.json").read_text())
    assert state["manifest_written"]["by"] == "vlmlab verify --write-manifest"


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


def _vqa_dir(root: Path, records: list[dict], size: int = 32) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (200, 30, 30)).save(root / "red.png")
    (root / "test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return root


def test_data_files_and_pickles_are_parsed_within_bounds(tmp_path):
    data = _vqa_dir(
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


# ----- 5. one line instead of each traceback -------------------------------------------------------------------------
def _llava_dir(root: Path, records: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (30, 200, 30)).save(root / "green.png")
    (root / "mix.json").write_text(json.dumps(records))
    return root / "mix.json"


def _turns(*texts: str) -> list[dict]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(texts)]


def test_data_check_on_hostile_paths_and_text_only_records(tmp_path):
    mix = _llava_dir(
        tmp_path / "mix",
        [
            {"id": "a", "image": "green.png", "conversations": _turns("<image>\nWhat color?", "Green.")},
            {"id": "t1", "conversations": _turns("Write a haiku.", "Leaves fall...", "Another?", "Snow.")},
            {"id": "t2", "conversations": _turns("Hello", "Hi there")},
        ],
    )
    empty = _llava_dir(tmp_path / "empty", [{"id": "t", "conversations": _turns("Say nothing.", "  ")}])
    nul = _vqa_dir(tmp_path / "nul", [{"id": 0, "image": "red\u0000.png", "question": "q", "answer": "a"}])
    escape = _llava_dir(
        tmp_path / "escape", [{"id": "e", "image": "\x1b[31mred.png", "conversations": _turns("<image>\nQ", "A")}]
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("RGB", (8, 8)).save(outside / "private.png")
    linked = _llava_dir(
        tmp_path / "linked", [{"id": "l", "image": "x/private.png", "conversations": _turns("<image>\nQ", "A")}]
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
    data = _vqa_dir(tmp_path / "long", [{"id": 0, "image": "red.png", "question": question, "answer": "red"}])
    mix = _llava_dir(
        tmp_path / "long-mix",
        [{"id": "m", "image": "green.png", "conversations": _turns(f"<image>\n{question}", "Green.")}],
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

    data = _vqa_dir(
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


def test_the_bounds_leave_ordinary_input_alone(tmp_path):
    """The limits sit far above real files: anchors reused a few times, 64 levels of JSON, `\\r\\n` line ends and
    U+2028 inside JSON lines, a refs pickle that shares its strings, a lock's own holder record."""
    from vlmlab import bounded
    from vlmlab.data.tasks.refcoco import load_pickle
    from vlmlab.errors import UserError
    from vlmlab.locks import holder_of, holder_text

    config = "lr: &lr {projector: 1.0e-3, llm: 2.0e-4}\nstages: [{name: a, lr: *lr}, {name: b, lr: *lr}]\n"
    assert bounded.yaml_data(config, "c.yaml")["stages"][1]["lr"] == {"projector": 1.0e-3, "llm": 2.0e-4}
    deep = {}
    node = deep
    for _ in range(bounded.JSON_MAX_DEPTH - 1):
        node["x"] = {}
        node = node["x"]
    assert bounded.json_data(json.dumps(deep), "d.json") == deep  # 64 levels: read
    with pytest.raises(UserError, match="d.json: JSON nested deeper than 64 levels"):
        bounded.json_data(json.dumps({"x": deep}), "d.json")
    lines = tmp_path / "a.jsonl"
    lines.write_bytes('{"a": "x\u2028y"}\r\n\r\n{"a": "\u0085"}\n{"a": 3}'.encode())
    assert [rec for _, rec in bounded.jsonl_records(lines)] == [{"a": "x\u2028y"}, {"a": "\u0085"}, {"a": 3}]
    refs = [{"ref_id": i, "split": "train", "sentences": [{"sent": "the left one"}]} for i in range(2000)]
    (tmp_path / "refs.p").write_bytes(pickle.dumps(refs))  # the strings are memoized: shared, as the real files
    assert load_pickle(tmp_path / "refs.p") == refs
    assert holder_of(holder_text()) == holder_text()
    assert holder_of("pid 4242 on elsewhere since today") == "pid 4242 on elsewhere since today"
    assert holder_of("pid 1 on host since now\x1b[2J") is None and holder_of("root:x:0:0") is None
