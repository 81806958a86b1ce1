"""One writer per run and per study: an exclusive lock on `<dir>/.lock`, taken before anything is written.

The lock is the kernel's (`flock`), so a writer killed with -9 leaves no lock behind: the next writer takes it
over (and says whose it was). The file names the holder (pid, host, start time) for the message a second
writer gets. Within one process the lock is re-entrant: a study holding a variant's run can evaluate it.

A directory may come from someone else, so the lock file is opened without following a link and must be a
regular file of one name holding nothing but a holder record (or nothing): a `.lock` that is a symbolic link,
a FIFO, a directory, a hard link or a file with other content is refused in one line and left as it is. Only a
record that parses as `pid N on HOST since TIME` is ever printed. While the lock is held, writes under the
directory never pass through a link (`vlmlab.io.confined`).
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import os
import re
import socket
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from vlmlab import io
from vlmlab.errors import EXIT_BUSY, UserError

LOCK = ".lock"
HOLDER = re.compile(r"pid (\d{1,10}) on ([A-Za-z0-9][A-Za-z0-9._-]{0,252}) since ([0-9A-Za-z:. -]{1,40})")
MAX_RECORD = 512  # bytes of a lock file that are read; a holder record is about 60
_held: dict[Path, int] = {}  # directories this process holds, with their nesting depth


def holder_text() -> str:
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:253] or "unknown-host"
    return f"pid {os.getpid()} on {host} since {now}"


def holder_of(text: str) -> str | None:
    """The holder record in a lock file's text, validated (`pid N on HOST since TIME`), or None."""
    match = HOLDER.fullmatch(text.strip())
    return match.group(0) if match else None


def _open_lock(path: Path) -> int:
    """The lock file's descriptor, opened without following a link (created if missing). A link, a directory, a
    FIFO or device, a file with several names, or content that is not a holder record is refused in one line."""
    refuse = f"{path}: not a vlmlab lock file"
    advice = "; remove it if nothing uses it, or choose another directory"
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"{refuse} (a symbolic link){advice}") from None
        if exc.errno in (errno.EISDIR, errno.ENXIO, errno.EOPNOTSUPP):
            raise UserError(f"{refuse} (not a regular file){advice}") from None
        raise
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "not a regular file"
    elif info.st_nlink != 1:
        problem = f"a file with {info.st_nlink} names (a hard link)"
    elif info.st_size > MAX_RECORD:
        problem = f"{info.st_size:,} bytes, not a holder record"
    else:
        text = os.pread(fd, MAX_RECORD, 0).decode("utf-8", "replace")
        if text.strip() and holder_of(text) is None:
            problem = "it holds something other than a holder record"
    if problem is not None:
        os.close(fd)
        raise UserError(f"{refuse} ({problem}){advice}")
    return fd


def _record(fd: int) -> str | None:
    return holder_of(os.pread(fd, MAX_RECORD, 0).decode("utf-8", "replace"))


def _write_record(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)  # the file was checked to be this directory's own lock file (see _open_lock)
    if text:
        os.pwrite(fd, (text + "\n").encode(), 0)


@contextmanager
def exclusive(directory: str | Path, what: str = "run", report=None) -> Iterator[None]:
    """Hold `directory`'s lock while the block runs (the directory is made if missing, and removed again when the
    block made it and left nothing else in it). A lock held by another process is one line naming the holder."""
    given = directory
    directory = Path(directory).resolve()
    if directory in _held:
        _held[directory] += 1
        try:
            yield
        finally:
            _held[directory] -= 1
        return
    io.check_write(given, replace_link=False)  # inside a confined study, a run's own path may not be a link
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _record(fd) or "another process"
        os.close(fd)
        raise UserError(
            f"{directory}: this {what} is being written by {holder}; wait for it to finish, or choose "
            "another directory",
            exit_code=EXIT_BUSY,
        ) from None
    previous = _record(fd)
    if previous and report is not None:  # the last holder ended without releasing (killed): its lock is gone
        report(f"{directory}: taking over the lock of {previous}, which is no longer running")
    _write_record(fd, holder_text())
    _held[directory] = 1
    try:
        with ExitStack() as stack:
            stack.enter_context(io.confined(directory))
            stack.enter_context(io.confined(given))
            yield
    finally:
        del _held[directory]
        _write_record(fd, "")  # released cleanly: an empty file means nobody was cut off
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        if created and [p.name for p in directory.iterdir()] == [LOCK]:
            path.unlink(missing_ok=True)
            directory.rmdir()
