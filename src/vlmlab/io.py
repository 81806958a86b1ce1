"""Atomic output: write to a temp file or directory beside the target, then rename it over the target."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from vlmlab.errors import UserError


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
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
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
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
    """Append one JSON line (logs are append-only; a torn last line is skipped by readers)."""
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=float) + "\n")


def truncate_lines(target: str | Path, keep: int) -> None:
    """Keep the first `keep` complete lines of a log (drops what was appended after a checkpoint, and a torn line)."""
    target = Path(target)
    if not target.exists():
        return
    lines = target.read_text(encoding="utf-8").splitlines(keepends=True)
    complete = [line for line in lines[:keep] if line.endswith("\n")]
    if complete != lines:
        write_text(target, "".join(complete))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that names a key twice (YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the constructor below reports it
                duplicate = False
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key) if not isinstance(key, (list, dict)) else None
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str) -> Any:
    """YAML text as data; bad YAML or a duplicate key is one line naming `source` and the line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        raise UserError(
            f"{source}:{where} not valid YAML" + (f" ({problem})" if problem else ""), exit_code=2
        ) from None


def read_yaml_file(path: str | Path, what: str = "config file") -> Any:
    """A YAML file as data: a missing file, one that is not UTF-8 text, bad YAML or a duplicate key is one line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found", exit_code=2)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (a {what} is YAML)", exit_code=2) from None
    return parse_yaml(text, str(path))
