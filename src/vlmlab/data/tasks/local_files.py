"""Shared checks for the benchmark loaders: local paths, whole-file JSON, typed record fields, confined images."""

from __future__ import annotations

import functools
import itertools
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from vlmlab.errors import ConfigError, DataError

_KIND_NAMES = {
    str: "a string",
    int: "an integer",
    list: "a list",
    dict: "a JSON object",
    (int, float): "a number",
    (str, int): "a string or an integer",
}


T = TypeVar("T")


def take(items: Iterable[T], limit: int | None, empty: str | Callable[[], str]) -> list[T]:
    """The first `limit` of `items` (all of them when None), read lazily so a limit stops the parsing early;
    none at all is a DataError with the message `empty` (a callable when it reports what the reading saw)."""
    out = list(itertools.islice(items, limit))
    if not out:
        raise DataError(empty() if callable(empty) else empty)
    return out


def require_path(path: str | None, task: str, layout: str) -> Path:
    """The source's `path` as a Path; a missing one is a ConfigError that says what it must point to."""
    if path is None:
        raise ConfigError("path", f"{task} needs a local path: {layout}")
    return Path(path)


def require_split(split: str, splits: tuple[str, ...], task: str) -> None:
    if split not in splits:
        raise ConfigError("split", f"{task} has splits {', '.join(splits)}, not {split!r}")


def read_json(file: Path, what: str) -> Any:
    """A whole JSON file; a missing file or bad JSON is a DataError naming the file (and line)."""
    if not file.is_file():
        raise DataError(f"{file}: {what} not found")
    try:
        with open(file, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise DataError(f"{file}: not UTF-8 text") from None
    except PermissionError:
        raise DataError(f"{file}: not readable (permission denied)") from None


def field(record: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """`record[key]`, checked to be of `kind` (bools never count as numbers); else a DataError at `where`."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise DataError(f"{where}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"{where}: field {key!r} must be {_KIND_NAMES.get(kind, kind)}")
    return value


def image_under(root: Path, name: str, where: str) -> str:
    """The path of image `name` under `root`; a path that leaves `root` (absolute, or through `..`) is a
    DataError. Confinement is lexical: symlinks inside `root` are followed when the image is read (LLaVA's
    data folders often link `coco/` to a shared copy). Cheap enough for 665k records (no system call)."""
    base = _resolved(os.fspath(root))
    image = os.path.normpath(os.path.join(base, name))
    if os.path.isabs(name) or not (image == base or image.startswith(base.rstrip(os.sep) + os.sep)):
        raise DataError(f"{where}: image path {name!r} leaves the image directory {root}")
    return image


@functools.lru_cache(maxsize=256)
def _resolved(root: str) -> str:
    return os.path.realpath(root)
