"""Progress when the console is not a terminal (a scheduler's log file, CI): plain lines at a steady cadence."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import yaml
from rich.console import Console

from vlmlab.progress import LogProgress


def _lines(every: float, steps: int, dt: float) -> list[str]:
    clock = [0.0]
    out = io.StringIO()
    bar = LogProgress(every=every, get_time=lambda: clock[0], out=Console(file=out, width=200))
    with bar:
        job = bar.add_task("finetune (stage 2/2)", total=steps, info="")
        for step in range(1, steps + 1):
            clock[0] += dt
            bar.update(job, info=f"loss {10 / step:.4f}")
            bar.update(job, completed=step)
    return [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]  # without the wall-clock stamp


def test_a_line_every_five_percent_when_each_takes_long_enough():
    # 400 steps at 0.25 s: 5% is 20 steps = 5 s, at least every/6 = 5 s apart -> a line per 5%
    lines = _lines(every=30, steps=400, dt=0.25)
    assert lines[0] == "finetune (stage 2/2): 0/400 (0%), started"
    assert lines[6] == "finetune (stage 2/2): 120/400 (30%), 4/s, elapsed 0:30, eta 1:10, loss 0.0833"
    assert lines[-1] == "finetune (stage 2/2): 400/400 (100%), 4/s, elapsed 1:40, loss 0.0250, done"
    assert len(lines) == 1 + 19 + 1


def test_fast_steps_print_every_n_seconds_not_every_five_percent():
    # 2,000 steps of 1/128 s (15.6 s in all): 5% marks pass every 0.8 s, but lines stay >= 5 s (640 steps) apart
    lines = _lines(every=30, steps=2000, dt=1 / 128)
    done = [int(re.match(r".*?: (\d+)/", line).group(1)) for line in lines]
    assert done == [0, 640, 1280, 1920, 2000]
    # slow steps with a long period: a line every `every` seconds even without crossing a 5% mark
    lines = _lines(every=30, steps=1000, dt=20)
    assert [re.match(r".*?: (\d+)/", line).group(1) for line in lines[:5]] == ["0", "2", "4", "6", "8"]
    assert lines[1] == "finetune (stage 2/2): 2/1000 (0%), 0.05/s, elapsed 0:40, eta 5:32:40, loss 5.0000"


def test_training_in_a_non_terminal_subprocess_prints_progress_lines(tmp_path):
    sys.path.insert(0, os.path.dirname(__file__))
    from conftest import TINY

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    env = {k: v for k, v in os.environ.items() if k != "VLMLAB_NO_PROGRESS"}
    env["VLMLAB_PROGRESS_SECONDS"] = "0"  # a line on every update
    proc = subprocess.run(
        [sys.executable, "-m", "vlmlab", "train", str(config), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    stamp = r"\d\d:\d\d:\d\d "
    finetune = [line for line in lines if re.match(stamp + r"finetune \(stage 2/2\): ", line)]
    assert re.fullmatch(stamp + r"finetune \(stage 2/2\): 0/4 \(0%\), started", finetune[0])
    assert any(re.search(r": 2/4 \(50%\), [\d.]+/s, elapsed 0:\d\d, eta 0:\d\d, loss \d+\.\d{4}$", x) for x in finetune)
    assert re.search(r": 4/4 \(100%\), [\d.]+/s, elapsed 0:\d\d, loss \d+\.\d{4}, done$", finetune[-1])
    assert any(re.match(stamp + r"align \(stage 1/2\): 2/2 \(100%\).*done$", x) for x in lines)
    assert any(re.match(stamp + r"eval easy-vqa/test: 24/24 \(100%\).*done$", x) for x in lines)
    assert "\x1b[" not in proc.stderr  # no live display, no escape codes
    assert not any("finetune" in line and "━" in line for line in lines)  # no bar drawn at the end either
