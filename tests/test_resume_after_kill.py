"""`kill -9` a real `vlmlab train` process mid-stage; `--resume` ends with byte-identical predictions."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from vlmlab import checkpoint as ckpt
from vlmlab import io
from vlmlab.config import config_from_dict
from vlmlab.evaluation.evaluate import evaluate_run
from vlmlab.runs import RunDir
from vlmlab.train.trainer import Trainer


def _train_cli(config, out, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "vlmlab", "train", str(config), "--out", str(out), "--no-eval", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, VLMLAB_NO_PROGRESS="1"),
    )


def _kill_after_checkpoint(proc, run: RunDir, rng: random.Random, timeout: float = 120.0) -> str:
    """SIGKILL the process a random moment after its first mid-finetune checkpoint; returns what was on disk."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(c.name.startswith("step-01") and (c / ckpt.STATE).is_file() for c in run.checkpoints.glob("step-*")):
            time.sleep(rng.uniform(0.0, 0.15))  # somewhere inside the next steps, not at a checkpoint boundary
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    return ckpt.latest_checkpoint(run.path).name


def test_kill_9_mid_stage_then_resume_gives_identical_predictions(tiny_raw, tmp_path):
    tiny_raw["train"].update(checkpoint_every=2, threads=2)
    tiny_raw["train"]["stages"][1]["max_steps"] = 24
    config = tmp_path / "c.yaml"
    io.write_yaml(config, tiny_raw)
    cfg = config_from_dict(tiny_raw)

    ref = RunDir(tmp_path / "uninterrupted")
    Trainer(cfg, ref.path).run_training()
    evaluate_run(ref.path)

    run = RunDir(tmp_path / "killed")
    seed = random.randrange(10_000)
    cut_at = _kill_after_checkpoint(_train_cli(config, run.path), run, random.Random(seed))
    assert not run.final.exists(), "the process finished before it was killed: nothing was tested"
    log_before = io.read_jsonl(run.train_log)
    resumed = _train_cli(config, run.path, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    evaluate_run(run.path)

    assert run.predictions().read_bytes() == ref.predictions().read_bytes(), f"kill seed {seed}, resumed from {cut_at}"
    assert ckpt.load_file_state(run.path).keys() == ckpt.load_file_state(ref.path).keys()
    # the log is the uninterrupted one: steps logged after the checkpoint (and a torn line) were cut, then redone
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]  # noqa: E731
    assert strip(io.read_jsonl(run.train_log)) == strip(io.read_jsonl(ref.train_log))
    assert len(log_before) >= int(cut_at[-8:]) + 2  # align's 2 steps + finetune up to the checkpoint were there


def test_resume_tidies_partial_writes_and_refuses_an_edited_config(tiny_raw, tmp_path, capsys):
    from vlmlab.cli import main

    tiny_raw["train"]["checkpoint_every"] = 2
    cfg = config_from_dict(tiny_raw)
    run = RunDir(tmp_path / "run")
    Trainer(cfg, run.path).run_training()
    (run.checkpoints / ".step-0100000006.abc").mkdir()  # a checkpoint being written when the process died
    (run.path / ".metrics.json.x.tmp").write_text("{")
    with open(run.train_log, "a") as fh:
        fh.write('{"stage": "finetune", "st')  # a torn line
    import shutil

    shutil.rmtree(run.final)
    Trainer(cfg, run.path, resume=True).run_training()
    assert not list(run.checkpoints.glob(".*")) and not list(run.path.glob(".*.tmp"))
    assert run.train_log.read_text().endswith("}\n")
    # evaluation settings may change after training; the model, data or recipe may not (one line, exit 1)
    run.config.write_text(run.config.read_text().replace("max_new_tokens: 4", "max_new_tokens: 5"))
    assert main(["eval", str(run.path)]) == 0
    run.config.write_text(run.config.read_text().replace("batch_size: 8", "batch_size: 4"))
    assert main(["eval", str(run.path)]) == 1
    assert "config.yaml: its model, data or training settings changed after training" in capsys.readouterr().err
