"""Progress for every long operation: live rich bars on a terminal, plain timestamped lines in a log file or CI
(quiet off the main process, and with VLMLAB_NO_PROGRESS)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, emoji=False)  # `refcoco:train:` is a task, not an emoji code

SECONDS_ENV = "VLMLAB_PROGRESS_SECONDS"  # a log line at least this often (default 30; 0: on every update)
DEFAULT_SECONDS = 30.0
STEP = 0.05  # ... and whenever another 5% of the total is done, at most every `seconds / 6`


def progress(disable: bool = False) -> Progress:
    """A Progress with description, bar, n/N, elapsed, ETA and a free-text `info` field per task. When the
    console is not a terminal (a batch scheduler's stdout file, CI), the same calls print plain lines instead."""
    disable = disable or bool(os.environ.get("VLMLAB_NO_PROGRESS"))
    if not disable and not console.is_terminal:
        return LogProgress(every=log_seconds())
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=disable,
        transient=False,
    )


def log_seconds() -> float:
    """The cadence of log lines from $VLMLAB_PROGRESS_SECONDS (a bad value falls back to the default)."""
    try:
        return max(0.0, float(os.environ.get(SECONDS_ENV, DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


@dataclass
class _Cadence:
    started: float  # when the task was added
    first: float  # its `completed` then (a resumed stage starts part-way)
    last: float  # when its last line was printed
    mark: int  # the last 5% step a line was printed at
    finished: bool = False


class LogProgress(Progress):
    """rich's Progress with the live display off: each task prints a line when it starts, at least every `every`
    seconds or 5% of its total, and when it finishes — step/total, percent, rate, elapsed, ETA and its `info`
    (e.g. the loss). Rate and ETA are over the whole task so far, so they are steady from one line to the next."""

    def __init__(self, every: float = DEFAULT_SECONDS, get_time=None, out: Console | None = None):
        super().__init__(console=out or console, disable=True, get_time=get_time or time.monotonic)
        self.every = every
        self._cadence: dict[TaskID, _Cadence] = {}

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: int = 0, **fields):
        fields.setdefault("info", "")
        task_id = super().add_task(description, start=start, total=total, completed=completed, **fields)
        now = self.get_time()
        self._cadence[task_id] = _Cadence(now, float(completed), now, self._mark(task_id))
        self._line(task_id, "started")
        return task_id

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        if kwargs.get("completed") is not None or kwargs.get("advance") is not None:  # not an `info`-only update
            self._maybe_line(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_line(task_id)

    def _mark(self, task_id: TaskID) -> int:
        task = self._tasks[task_id]
        return int(task.completed / task.total / STEP + 1e-9) if task.total else 0

    def _maybe_line(self, task_id: TaskID) -> None:
        cadence, task = self._cadence.get(task_id), self._tasks[task_id]
        if cadence is None or cadence.finished:
            return
        now = self.get_time()
        if task.total is not None and task.completed >= task.total:
            cadence.finished = True
            self._line(task_id, "done")
            return
        since = now - cadence.last
        mark = self._mark(task_id)
        if since >= self.every or (mark > cadence.mark and since >= self.every / 6):
            cadence.last, cadence.mark = now, mark
            self._line(task_id)

    def _line(self, task_id: TaskID, state: str = "") -> None:
        self.console.print(self.describe(task_id, state), highlight=False, soft_wrap=True, markup=False)

    def describe(self, task_id: TaskID, state: str = "") -> str:
        """One line: `HH:MM:SS description: done/total (pct%), rate/s, elapsed, eta, info[, state]`."""
        task, cadence = self._tasks[task_id], self._cadence[task_id]
        elapsed = self.get_time() - cadence.started
        done = task.completed - cadence.first
        parts = [f"{_count(task.completed)}/{_count(task.total)}" if task.total else _count(task.completed)]
        if task.total:
            parts[0] += f" ({100 * task.completed / task.total:.0f}%)"
        if state != "started":
            rate = done / elapsed if elapsed > 0 else 0.0
            parts.append(f"{rate:.3g}/s" if rate else "-/s")
            parts.append(f"elapsed {_clock(elapsed)}")
            if state != "done" and task.total and rate:
                parts.append(f"eta {_clock((task.total - task.completed) / rate)}")
        info = str(task.fields.get("info", "")).strip()
        if info:
            parts.append(info)
        if state:
            parts.append(state)
        stamp = time.strftime("%H:%M:%S")
        return f"{stamp} {task.description}: " + ", ".join(parts)


def _count(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' own tqdm bars (weight loading/saving) inside vlmlab's progress display."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
