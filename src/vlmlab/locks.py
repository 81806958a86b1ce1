"""One writer per run and per study: an exclusive lock on `<dir>/.lock`, taken before anything is written.

The lock is the kernel's (`flock`), so a writer killed with -9 leaves no lock behind: the next writer takes it
over (and says whose it was). The file names the holder (pid, host, start time) for the message a second
writer gets. Within one process the lock is re-entrant: a study holding a variant's run can evaluate it.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vlmlab.errors import EXIT_BUSY, UserError

LOCK = ".lock"
_held: dict[Path, int] = {}  # directories this process holds, with their nesting depth


def holder_text() -> str:
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"pid {os.getpid()} on {socket.gethostname()} since {now}"


@contextmanager
def exclusive(directory: str | Path, what: str = "run", report=None) -> Iterator[None]:
    """Hold `directory`'s lock while the block runs (the directory is made if missing, and removed again when the
    block made it and left nothing else in it). A lock held by another process is one line naming the holder."""
    directory = Path(directory).resolve()
    if directory in _held:
        _held[directory] += 1
        try:
            yield
        finally:
            _held[directory] -= 1
        return
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK
    fh = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise UserError(
            f"{directory}: this {what} is being written by {holder}; wait for it to finish, or choose "
            "another directory",
            exit_code=EXIT_BUSY,
        ) from None
    fh.seek(0)
    previous = fh.read().strip()
    if previous and report is not None:  # the last holder ended without releasing (killed): its lock is gone
        report(f"{directory}: taking over the lock of {previous}, which is no longer running")
    fh.seek(0)
    fh.truncate()
    fh.write(holder_text() + "\n")
    fh.flush()
    _held[directory] = 1
    try:
        yield
    finally:
        del _held[directory]
        fh.seek(0)
        fh.truncate()  # released cleanly: an empty file means nobody was cut off
        fh.flush()
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()
        if created and [p.name for p in directory.iterdir()] == [LOCK]:
            path.unlink(missing_ok=True)
            directory.rmdir()
