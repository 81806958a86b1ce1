"""A run, study or import directory from someone else, tried as a hostile user would (docs/reliability.md,
"Threat model"): each case is built in a temp dir and run through the CLI in a fresh `python -m vlmlab` process,
asserting that no code ran (a module or pickle that would write a marker file), no file outside changed, and the
refusal is one line with the documented exit code. Fresh processes cost ~5 s each, so each test runs its cases
side by side. Classes 1-3 here (code, links, integrity); bounded parsers and one-line refusals in
test_security_inputs.py."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest
import yaml

from _hostile import MARKER, cli, copy_run, forge, in_parallel, one_line, snapshot, train_tiny
from vlmlab.checkpoint import write_manifest
from vlmlab.errors import EXIT_CONFIG, EXIT_DATA
from vlmlab.runs import RunDir


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    return train_tiny(tmp_path_factory)


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
    hard = tmp_path / "hard"  # a hard link to a file elsewhere is refused too (checked in this process)
    hard.mkdir()
    os.link(outside / "precious.txt", hard / ".lock")
    from vlmlab.errors import UserError
    from vlmlab.locks import exclusive

    with pytest.raises(UserError, match=r"\.lock: not a vlmlab lock file \(a file with 2 names \(a hard link\)\)"):
        with exclusive(hard):
            pass
    assert snapshot(outside) == before


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
