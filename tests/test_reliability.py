"""The failure classes of docs/reliability.md, tried as a user would: each ends in one line with its exit code, or
in a run that can be continued; none leaves a dead-end run directory or a traceback."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import time

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from _fuzz import FUZZ, tally
from conftest import TINY
from vlmlab import checkpoint as ckpt
from vlmlab.cli import main
from vlmlab.errors import EXIT_BUSY, EXIT_CONFIG, EXIT_DATA, EXIT_ENVIRONMENT
from vlmlab.runs import RunDir

TINY_FOR_FUZZ = TINY


def cli(*argv: str) -> tuple[int, str]:
    """`python -m vlmlab ARGV` in a fresh process: (exit code, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "vlmlab", *argv], capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stderr.strip()


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err and lines[0].startswith("error: "), err
    return lines[0].removeprefix("error: ")


def in_process(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, everything printed as one line of text, stderr) of `vlmlab ARGV` run in this process."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split()), captured.err.strip()


def write(tmp_path, raw, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


# ----- configs and values: refused before anything runs, exit 2 ----------------------------------------
def test_config_failures_are_one_line_with_exit_2_from_a_fresh_process(tiny_raw, tmp_path):
    """One subprocess per class would cost seconds each; these go through one `python -m vlmlab` per case."""
    dup = tmp_path / "dup.yaml"
    dup.write_text(yaml.safe_dump(tiny_raw) + "seed: 3\n")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    good = write(tmp_path, tiny_raw)
    cases = [
        (["train", str(dup)], f"{dup}: line ", "duplicate key 'seed'"),
        (["train", str(binary)], f"{binary}: not UTF-8 text", ""),
        (["train", str(good), "--set", "model=[1"], "--set 'model=[1': line 1", "not valid YAML"),
    ]
    for argv, start, detail in cases:
        code, err = cli(*argv)
        line = one_line(err)
        assert code == EXIT_CONFIG and line.startswith(start) and detail in line, (argv, err)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"train.stages.0.lr": {"projector": 0.0}}, "train.stages.0.lr: every learning rate is 0"),
        ({"train.stages.0.lr": {"projector": float("nan")}}, "train.stages.0.lr: learning rate for 'projector'"),
        ({"train.betas": [2, 5]}, "train.betas"),
        ({"data.image.mean": [float("nan"), 0.5, 0.5]}, "data.image.mean"),
        ({"data.image.std": [0.0, 0.5, 0.5]}, "data.image.std"),
        ({"data.max_bad_fraction": 2}, "data.max_bad_fraction"),
        ({"data.on_bad_image": "ignore"}, "data.on_bad_image"),
        ({"train.stages.0.epochs": float("inf")}, "train.stages.0.epochs"),
    ],
)
def test_bad_values_are_refused_by_the_schema(capsys, tiny_raw, tmp_path, change, message):
    for dotted, value in change.items():
        node, *path, last = dotted.split(".")
        target = tiny_raw[node]
        for p in path:
            target = target[int(p)] if p.isdigit() else target[p]
        target[last] = value
    code, _, err = in_process(capsys, "train", str(write(tmp_path, tiny_raw)), "--out", str(tmp_path / "run"))
    assert code == EXIT_CONFIG and one_line(err).startswith(message), err
    assert not (tmp_path / "run").exists()


def test_eval_arguments_are_checked(capsys, tmp_path):
    run = tmp_path / "no-run-needed"
    for argv, message in [
        (["eval", str(run), "--limit", "0"], "vlmlab eval: argument --limit: must be at least 1, got 0"),
        (["eval", str(run), "--perturb", "shift:100000"], "--perturb 'shift:100000': shift must be at most 4096"),
        (["eval", str(run), "--perturb", "noise:nan"], "--perturb 'noise:nan': expected noise:SIGMA"),
    ]:
        code, _, err = in_process(capsys, *argv)
        assert code == EXIT_CONFIG and one_line(err).startswith(message), (argv, err)


def test_a_study_s_evaluation_settings_are_checked_by_check(capsys, tiny_raw, tmp_path):
    spec = {
        "name": "t",
        "question": "q?",
        "base": tiny_raw,
        "factors": {"llm": {"keys": ["model.llm.id"], "levels": {"a": {"model.llm.id": "llama1-tiny"}}}},
        "eval": {"perturb": ["shift:100000"]},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    code, _, err = in_process(capsys, "study", str(path), "--check")
    assert code == EXIT_CONFIG and "eval.perturb" in one_line(err), err


class _Accepted(Exception):
    """A fuzzed command line that got as far as training or evaluating (where the fuzz test stops it)."""


COMMANDS = ["train", "eval", "score", "export", "import-llava", "report", "analyze", "attention", "bench", "study"]
FLAGS = ["--out", "--resume", "--set", "--no-eval", "--limit", "--task", "--perturb", "--blind", "--only", "--check"]
VALUE = st.one_of(
    st.sampled_from(["0", "-1", "1e9", "nan", "inf", "[1", "{a: }", ":", "=", "model=[1", "seed=x", "a.b.c=1"]),
    st.sampled_from(["train.batch_size=0", "data.image.size=-3", "train.betas=[2,5]", "model.llm.id=nope"]),
    st.sampled_from(["noise:2", "shift:-1", "shift:100000", "noise:", "blur:1", "easy-vqa:nosplit", "x" * 300]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=16),
)


OVERRIDE = st.one_of(
    st.sampled_from(["seed=3", "train.batch_size=4", "eval.max_new_tokens=2", "train.warmup_ratio=0.1", "name=x"]),
    st.builds(
        "{}={}".format,
        st.sampled_from(
            [
                "seed",
                "train.batch_size",
                "train.betas",
                "train.stages.0.lr.projector",
                "data.image.size",
                "model.vision.patch_size",
                "model.llm.num_heads",
                "eval.max_new_tokens",
                "train.stages",
                "data.train",
                "data.image.mean",
                "train.warmup_ratio",
                "model",
                "nope.key",
                "train.stages.5.lr",
            ]
        ),
        st.one_of(st.integers(-5, 5000).map(str), st.floats().map(str), VALUE),
    ),
    VALUE,
)


@FUZZ
@given(data=st.data())
def test_fuzzed_command_lines_end_in_one_line_or_success(data, capsys, monkeypatch, tmp_path_factory):
    """Random argument vectors and --set values: each ends in one line and a non-zero exit, or gets as far as
    training or evaluating (success); none ends in a traceback (an exception out of `main` fails the test)."""
    from vlmlab.evaluation import evaluate as evaluate_mod
    from vlmlab.train import trainer as trainer_mod

    def accepted(*args, **kwargs):
        raise _Accepted

    monkeypatch.setattr(trainer_mod.Trainer, "run_training", accepted)
    monkeypatch.setattr(evaluate_mod, "predict", accepted)
    root = tmp_path_factory.mktemp("fuzz")
    config = root / "c.yaml"
    if not config.exists():
        config.write_text(yaml.safe_dump(TINY_FOR_FUZZ))
        (root / "junk.yaml").write_bytes(b"\xff\x00" * 20)
        (root / "empty").mkdir()
    paths = [str(config), str(root / "junk.yaml"), str(root / "empty"), str(root / "missing"), "easy-vqa-tiny"]
    if data.draw(st.booleans()):  # half the cases: a valid config with fuzzed overrides (reaches the schema)
        argv = ["train", str(config), "--out", "x"]
        for _ in range(data.draw(st.integers(1, 3))):
            argv += ["--set", data.draw(OVERRIDE)]
    else:
        argv = [data.draw(st.sampled_from(COMMANDS))]
        argv += data.draw(st.lists(st.sampled_from(paths), min_size=0, max_size=1))
    for _ in range(data.draw(st.integers(0, 3))):
        flag = data.draw(st.sampled_from(FLAGS))
        argv += [flag] if flag in ("--resume", "--no-eval", "--blind", "--check") else [flag, data.draw(VALUE)]
    if "--out" in argv:
        argv[argv.index("--out") + 1] = str(root / "out")
    capsys.readouterr()
    try:
        code = main(argv)
    except _Accepted:
        tally("command lines", "accepted (reached training or evaluation)")
        return
    err = capsys.readouterr().err.strip()
    if code == 0:
        tally("command lines", "succeeded")
        return
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, (argv, err)
    tally("command lines", f"rejected, exit {code}")


# ----- data: bad images, bad files --------------------------------------------------------------------------
def _image_task(root, n_good: int, bad: dict[str, bytes]):
    """A vqa-jsonl task of `n_good` readable images and the given bad files."""
    root.mkdir(parents=True)
    recs = []
    for i in range(n_good):
        Image.new("RGB", (32, 32), ((i * 37) % 256, 80, 160)).save(root / f"img{i}.png")
        recs.append({"id": i, "image": f"img{i}.png", "question": "what color is it?", "answer": f"c{i % 3}"})
    for j, (name, content) in enumerate(bad.items()):
        (root / name).write_bytes(content)
        recs.append({"id": n_good + j, "image": name, "question": "what color is it?", "answer": "c0"})
    for split in ("train", "test"):
        (root / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return root


def _image_config(tiny_raw, root, **data):
    tiny_raw["data"]["train"] = {"task": "vqa-jsonl", "split": "train", "path": str(root)}
    tiny_raw["data"]["eval"] = [{"task": "vqa-jsonl", "split": "test", "path": str(root), "limit": 4}]
    tiny_raw["data"].update(data)
    return tiny_raw


TRUNCATED = b"\x89PNG\r\n\x1a\n truncated"


def test_a_bad_image_stops_the_run_by_name_and_a_fixed_one_continues_it(capsys, tiny_raw, tmp_path):
    root = _image_task(tmp_path / "data", 15, {"bad.png": TRUNCATED})
    config = write(tmp_path, _image_config(tiny_raw, root))
    out = str(tmp_path / "run")
    code, _, err = in_process(capsys, "train", str(config), "--out", out)
    line = one_line(err)
    assert code == EXIT_DATA and line.startswith(f"{root / 'bad.png'}: not a readable image")
    assert "data.on_bad_image: skip" in line and "run the same command again" in line
    Image.new("RGB", (32, 32)).save(root / "bad.png")  # the user replaces the file
    code, out_text, _ = in_process(capsys, "train", str(config), "--out", out)
    assert code == 0 and "starting afresh" in out_text  # no dead end: the run that never checkpointed restarts


def test_skip_policy_counts_logs_and_reports_the_bad_images(capsys, tiny_raw, tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 Mpx in 48 KB: a decompression bomb
    root = _image_task(tmp_path / "data", 30, {"bad.png": TRUNCATED, "bomb.png": bomb.read_bytes()})
    raw = _image_config(tiny_raw, root, on_bad_image="skip", max_bad_fraction=0.1)
    raw["data"]["eval"] = [{"task": "vqa-jsonl", "split": "test", "path": str(root), "limit": 4}]
    code, _, err = in_process(capsys, "train", str(write(tmp_path, raw)), "--out", str(tmp_path / "run"))
    assert code == 0, err
    run = RunDir(tmp_path / "run")
    record = json.loads(run.train_info.read_text())["bad_images"]
    assert record["policy"] == "skip" and record["items"] == 2
    assert sorted(record["skipped"].values()) == [str(root / "bad.png"), str(root / "bomb.png")]
    events = [json.loads(ln) for ln in run.train_log.read_text().splitlines()]
    assert sorted(e["image"] for e in events if e.get("event") == "bad-image") == sorted(record["skipped"].values())

    raw["data"]["max_bad_fraction"] = 0.01  # 2 of 32 items is over the limit
    code, _, err = in_process(capsys, "train", str(write(tmp_path, raw)), "--out", str(tmp_path / "run2"))
    assert code == EXIT_DATA and "more than data.max_bad_fraction=0.01 allows" in one_line(err)

    code, text, err = in_process(capsys, "data", "check", "vqa-jsonl:train", "--path", str(root))
    assert code == EXIT_DATA and one_line(err).startswith("2 of 32 images cannot be used: ")
    assert f"bad image: {root / 'bomb.png'}: image too large to decode safely" in text


def test_unreadable_or_non_utf8_records_are_one_line(capsys, tiny_raw, tmp_path, monkeypatch):
    import builtins

    from vlmlab import bounded

    root = _image_task(tmp_path / "data", 4, {})
    raw = _image_config(tiny_raw, root)
    for split in ("train", "test"):  # the evaluation data is read before training too
        good = (root / f"{split}.jsonl").read_bytes()
        (root / f"{split}.jsonl").write_bytes(
            b'{"id": 0, "image": "img0.png", "question": "\xff\xfe", "answer": "a"}\n'
        )
        code, _, err = in_process(capsys, "train", str(write(tmp_path, raw)), "--out", str(tmp_path / "run"))
        assert code == EXIT_DATA and one_line(err) == f"{root / f'{split}.jsonl'}:1: not UTF-8 text"
        assert not (tmp_path / "run").exists()
        (root / f"{split}.jsonl").write_bytes(good)

    def denied(path, *args, **kwargs):
        if str(path).endswith(".jsonl"):
            raise PermissionError(13, "Permission denied")
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(bounded, "open", denied, raising=False)  # as a data file without read permission
    code, _, err = in_process(capsys, "train", str(write(tmp_path, raw)), "--out", str(tmp_path / "run"))
    assert code == EXIT_DATA and "not readable (permission denied)" in one_line(err)
    assert not (tmp_path / "run").exists()


# ----- runs: locks, dead ends, full disks, torn files -------------------------------------------------------
FAST = {"align": 1, "finetune": 2}


def _fast(tiny_raw):
    for stage in tiny_raw["train"]["stages"]:
        stage["max_steps"] = FAST[stage["name"]]
    tiny_raw["train"]["checkpoint_every"] = 1
    tiny_raw["data"]["eval"][0]["limit"] = 4
    return tiny_raw


def test_a_second_writer_is_refused_naming_the_holder_and_a_stale_lock_is_taken_over(capsys, tiny_raw, tmp_path):
    config = write(tmp_path, _fast(tiny_raw))
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; fh = open(sys.argv[1], 'a+'); fcntl.flock(fh, fcntl.LOCK_EX); "
            "fh.write('pid 4242 on elsewhere since today\\n'); fh.flush(); print('held', flush=True); time.sleep(60)",
            str(run / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = in_process(capsys, "train", str(config), "--out", str(run))
        assert code == EXIT_BUSY
        assert one_line(err) == (
            f"{run}: this run is being written by pid 4242 on elsewhere since today; wait for it to finish, "
            "or choose another directory"
        )
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed (-9 leaves its text but no kernel lock): the next writer takes over and says so
    code, out, err = in_process(capsys, "train", str(config), "--out", str(run))
    assert code == 0, err
    assert "taking over the lock of pid 4242 on elsewhere since today" in " ".join(out.split())
    with open(run / ".lock") as fh:  # released: free, and empty
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert fh.read() == ""


def test_two_concurrent_trainings_of_one_run_the_second_exits_4(tiny_raw, tmp_path):
    tiny_raw = _fast(tiny_raw)
    tiny_raw["train"]["stages"][1]["max_steps"] = 10**6  # still training when the second one starts
    config = write(tmp_path, tiny_raw)
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "vlmlab", "train", str(config), "--out", str(run)])
    try:
        deadline = time.time() + 120
        while not (run / "train_log.jsonl").is_file():  # training has begun, under the lock
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.05)
        code, err = cli("train", str(config), "--out", str(run))
        assert code == EXIT_BUSY and f"{run}: this run is being written by pid {first.pid}" in one_line(err)
        assert first.poll() is None  # the first writer goes on
    finally:
        first.kill()
        first.wait()


def test_a_full_disk_is_one_line_and_the_run_continues_after(capsys, tiny_raw, tmp_path, monkeypatch):
    import errno

    from vlmlab import checkpoint

    config = write(tmp_path, _fast(tiny_raw))
    real, calls = checkpoint.save_file, {"n": 0}

    def full(tensors, filename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", full)
    code, _, err = in_process(capsys, "train", str(config), "--out", str(tmp_path / "run"))
    line = one_line(err)
    assert code == EXIT_ENVIRONMENT and "No space left on device" in line, line
    monkeypatch.setattr(checkpoint, "save_file", real)
    code, _, err = in_process(capsys, "train", str(config), "--out", str(tmp_path / "run"), "--resume")
    assert code == 0, err


def test_a_torn_trainer_state_falls_back_to_the_previous_checkpoint(capsys, tiny_raw, tmp_path):
    config = write(tmp_path, _fast(tiny_raw))
    run = RunDir(tmp_path / "run")
    assert in_process(capsys, "train", str(config), "--out", str(run.path))[0] == 0
    import shutil

    shutil.rmtree(run.final)  # as if killed before the end: resume from the checkpoints
    run.train_info.unlink()
    newest = ckpt.latest_checkpoint(run.path)
    (newest / ckpt.STATE).write_text('{"stage": 1, "st')  # torn
    code, out, err = in_process(capsys, "train", str(config), "--out", str(run.path), "--resume")
    assert code == 0, err
    assert "checksum" in out or "manifest" in out, out


def test_a_deleted_blind_prediction_file_is_evaluated_again(tiny_raw, tmp_path, monkeypatch):
    from vlmlab.study.runner import run_study
    from vlmlab.train.trainer import Trainer

    spec = {
        "name": "t",
        "question": "q?",
        "base": _fast(tiny_raw),
        "factors": {"llm": {"keys": ["model.llm.id"], "levels": {"a": {"model.llm.id": "llama1-tiny"}}}},
        "eval": {"blind": True},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    study = run_study(path, tmp_path / "s")
    blind = next((tmp_path / "s").rglob("predictions_blind.parquet"))
    blind.unlink()
    trained = []
    monkeypatch.setattr(Trainer, "run_training", lambda self: trained.append(1))
    run_study(path, tmp_path / "s")
    assert blind.is_file() and trained == []  # evaluated again, not retrained
    assert study.dir.complete.is_file()


def test_a_malformed_complete_json_is_one_line(capsys, tmp_path):
    study = tmp_path / "s"
    study.mkdir()
    for name in ("study.yaml", "control.json", "results.parquet", "summary.csv"):
        (study / name).write_text("{}")
    for content in ("{not json", "[1, 2]", '{"files": 3}'):
        (study / "complete.json").write_text(content)
        code, _, err = in_process(capsys, "report", str(study))
        assert code == EXIT_DATA and one_line(err).startswith(f"{study / 'complete.json'}:"), err
