"""Shared checks for the benchmark loaders: local paths, whole-file JSON, typed record fields, confined images."""

from __future__ import annotations

import functools
import itertools
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from vlmlab import bounded
from vlmlab.errors import ConfigError, DataError, UserError

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
    """A whole JSON file (bounded in depth, `vlmlab.bounded`); a missing file or bad JSON is a DataError naming
    the file (and line)."""
    try:
        return bounded.json_file(file, what)
    except UserError as exc:
        raise DataError(str(exc)) from None


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


def image_under(root: Path, name: str, where: str, what: str = "image directory") -> str:
    """The path of image `name` under `root`. A name with a control character, or one that leaves `root` —
    absolute, through `..`, or through a symbolic link inside `root` that points elsewhere — is a DataError.
    `root` itself may be a link. A link may lead into a directory named in $VLMLAB_IMAGE_ROOTS (the person
    running vlmlab allows it, not the data file: LLaVA's playground/data often links coco/ to a shared copy).
    One directory listing and one realpath per distinct folder, a set lookup per record: cheap enough for 665k
    records."""
    if _CONTROL.search(name):
        raise DataError(f"{where}: image path {name!r} has a control character")
    base = _resolved(os.fspath(root))
    inside = base.rstrip(os.sep) + os.sep
    image = os.path.normpath(os.path.join(base, name))
    if os.path.isabs(name) or not (image == base or image.startswith(inside)):
        raise DataError(f"{where}: image path {name!r} leaves the {what} {root}")
    folder, _, leaf = image.rpartition(os.sep)
    real_folder, links = _folder(folder or os.sep)
    real = os.path.realpath(image) if leaf in links else real_folder + leaf
    if not (real == base or real.startswith(inside)) and not any(
        real.startswith(r.rstrip(os.sep) + os.sep) for r in _allowed_roots(os.environ.get(IMAGE_ROOTS, ""))
    ):
        raise DataError(
            f"{where}: image path {name!r} leaves the {what} {root} through a symbolic link (to {real}); "
            f"name the directory it leads into in ${IMAGE_ROOTS} if you mean it"
        )
    return image


IMAGE_ROOTS = "VLMLAB_IMAGE_ROOTS"  # directories (os.pathsep-separated) that links in a data directory may reach
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@functools.lru_cache(maxsize=4096)
def _folder(folder: str) -> tuple[str, frozenset[str]]:
    """(`folder` resolved, with a trailing separator; the names in it that are symbolic links): one realpath and
    one directory listing per folder, not a stat per image."""
    try:
        with os.scandir(folder) as entries:
            links = frozenset(e.name for e in entries if e.is_symlink())
    except OSError:  # missing or unreadable: its images are reported when they are read
        links = frozenset()
    return os.path.realpath(folder).rstrip(os.sep) + os.sep, links


@functools.lru_cache(maxsize=4096)
def _resolved(root: str) -> str:
    return os.path.realpath(root)


@functools.lru_cache(maxsize=16)
def _allowed_roots(value: str) -> tuple[str, ...]:
    return tuple(os.path.realpath(d) for d in value.split(os.pathsep) if d)
