"""Atomic output: write to a temp file or directory beside the target, then rename it over the target.

Writes under a directory vlmlab is writing (a run or study held with `vlmlab.locks.exclusive`, or any
`confined` one) never pass through a symbolic link below it: a directory from someone else cannot redirect
a write, a truncation or a deletion outside itself (docs/reliability.md, "Threat model"). The directory
itself may be a link; nothing under it may be, on the way to what vlmlab writes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from vlmlab import bounded
from vlmlab.errors import UserError

_confined: list[str] = []  # absolute roots (as given and resolved) whose insides are written without links


@contextmanager
def confined(root: str | Path) -> Iterator[None]:
    """While the block runs, writes under `root` refuse to go through a symbolic link below it (`check_write`)."""
    forms = list(dict.fromkeys((os.path.abspath(root), os.path.realpath(root))))
    _confined.extend(forms)
    try:
        yield
    finally:
        for form in forms:
            _confined.remove(form)


def check_write(target: str | Path, replace_link: bool = True) -> None:
    """Refuse a write to `target` that would pass through a symbolic link below a confined root: one line naming
    the link, exit 1. With `replace_link`, `target` itself may be a link (an atomic rename replaces the link, not
    what it points to); appending to it, truncating it or deleting inside it may not."""
    path = os.path.abspath(target)
    for root in _confined:
        if not path.startswith(root.rstrip(os.sep) + os.sep):
            continue
        parts = path[len(root.rstrip(os.sep)) + 1 :].split(os.sep)
        current = root
        for i, part in enumerate(parts):
            current = os.path.join(current, part)
            if i == len(parts) - 1 and replace_link:
                break
            try:
                mode = os.lstat(current).st_mode
            except (FileNotFoundError, NotADirectoryError):
                break  # made as a real directory (or file) when written
            if stat.S_ISLNK(mode):
                raise UserError(
                    f"{current}: a symbolic link inside {root}; vlmlab never writes through a link in a run or "
                    "study directory (replace it by a real directory or file)"
                )


def make_dirs(path: str | Path) -> Path:
    """`mkdir -p` that refuses to pass through a symbolic link below a confined root."""
    path = Path(path)
    check_write(path, replace_link=False)
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_tree(path: str | Path) -> None:
    """Delete a directory (or file) vlmlab wrote; a symbolic link is removed as a link, never followed, and a path
    that passes through a link below a confined root is refused."""
    path = Path(path)
    check_write(path)
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)  # rmtree itself never follows links inside the tree


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    make_dirs(target.parent)
    check_write(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temp dir beside `target` (`.<name>.<random>`); on success it replaces `target` (an existing one is
    removed first), on error it is removed: a crash never leaves a partial directory under the real name."""
    target = Path(target)
    make_dirs(target.parent)
    check_write(target, replace_link=False)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        if target.is_symlink() or target.exists():
            remove_tree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def require_fresh_dir(target: str | Path, option: str) -> Path:
    """`target` as a Path if it does not exist or is an empty directory; else a usage error naming it."""
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{target}: already exists and is not an empty directory; choose another {option}", exit_code=2)
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json(target: str | Path, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_yaml(target: str | Path, obj: Any) -> None:
    write_text(target, yaml.safe_dump(obj, sort_keys=False))


def write_parquet(target: str | Path, frame: Any) -> None:
    """Write a pandas DataFrame to Parquet atomically."""
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)


def content_hash(obj: Any) -> str:
    """A short, stable hash of JSON-able data (keys sorted): fingerprints of configs, recipes, inputs."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def append_jsonl(target: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line (logs are append-only; a torn last line is skipped by readers). The log is opened
    without following a link: a log that is a symbolic link is one line, not a write elsewhere."""
    check_write(target, replace_link=False)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(target, flags, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"{target}: a symbolic link; vlmlab never appends through a link") from None
        raise
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=float) + "\n")


def truncate_lines(target: str | Path, keep: int) -> None:
    """Keep the first `keep` complete lines of a log (drops what was appended after a checkpoint, and a torn line).
    Lines end at `\\n` only; a log that is a symbolic link is refused, not followed."""
    target = Path(target)
    check_write(target, replace_link=False)
    if target.is_symlink():
        raise UserError(f"{target}: a symbolic link; vlmlab never rewrites a log through a link")
    if not target.exists():
        return
    lines = target.read_bytes().split(b"\n")
    complete = lines[:-1]  # what follows the last newline is torn (or empty)
    kept = complete[:keep]
    if len(kept) != len(complete) or lines[-1]:
        write_bytes(target, b"".join(line + b"\n" for line in kept))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a log vlmlab appends to (bounded; a torn or bad line is skipped, lines split on `\\n` only)."""
    return [rec for _, rec in bounded.jsonl_records(path, skip_bad=True) if isinstance(rec, dict)]


def read_json(path: str | Path) -> Any:
    """A JSON record of a run or study (bounded in size and depth; a bad one is one line naming it, exit 1)."""
    return bounded.record_file(path)


def read_record(path: str | Path) -> dict[str, Any]:
    """`read_json` of a record that must be a JSON object (a list or a number there is one line, exit 1)."""
    record = bounded.record_file(path)
    if not isinstance(record, dict):
        raise UserError(f"{path}: not a JSON object (edited or not written by vlmlab)")
    return record


def parse_yaml(text: str, source: str) -> Any:
    """YAML text as data (bounded: size, depth, aliases); bad YAML or a duplicate key is one line naming `source`."""
    return bounded.yaml_data(text, source)


def read_yaml_file(path: str | Path, what: str = "config file") -> Any:
    """A YAML file as data: a missing file, one that is not UTF-8 text, bad YAML or a duplicate key is one line."""
    return bounded.yaml_file(path, what)


def read_parquet(path: str | Path, what: str = "records") -> Any:
    """A Parquet file as a pandas DataFrame; one that cannot be read (not Parquet, truncated) is one line, exit 1."""
    import pandas as pd
    import pyarrow

    try:
        return pd.read_parquet(path)
    except (pyarrow.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        detail = bounded.shorten(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 120)
        raise UserError(f"{path}: not readable {what} ({detail})") from None
