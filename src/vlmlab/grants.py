"""What only the person running vlmlab may allow: options that run code or skip verification are command-line
flags, never read from a config, run, study or import directory.

A config may still *ask* for one (`model.llm.trust_remote_code: true`, `allow_pickle: true`): the part builder
calls `permit`, which gives the option only when this process was started with its flag, and otherwise stops
with one line naming the key and the flag (exit 2). Weights used without a manifest (`--allow-unverified`) are
noted per run, and the outputs made from them record it (`provenance`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from vlmlab.errors import ConfigError

FLAGS = {
    "trust_remote_code": "--trust-remote-code",  # Python shipped with an HF checkpoint (auto_map)
    "allow_pickle": "--allow-pickle",  # pickle weights (.bin, .pt, .pth): unpickling can run code
    "allow_unverified": "--allow-unverified",  # a checkpoint without manifest.json, used once with a warning
}

_granted: set[str] = set()
_notes: dict[str, list[str]] = {}  # run directory -> what was used unverified


@contextmanager
def granted(*names: str) -> Iterator[None]:
    """Allow these options (names of FLAGS) while the block runs: the command line's flags."""
    unknown = [n for n in names if n not in FLAGS]
    if unknown:
        raise ValueError(f"unknown grant {unknown[0]!r}")
    added = {n for n in names if n not in _granted}
    _granted.update(added)
    try:
        yield
    finally:
        _granted.difference_update(added)


def allows(name: str) -> bool:
    return name in _granted


def permit(name: str, asked: bool, key: str, what: str) -> bool:
    """The value option `name` takes: True only when the config asks (`asked`) and the command line allows it. A
    config that asks without the flag is a ConfigError naming `key`, what it would do and the flag."""
    if not asked:
        return False
    if name in _granted:
        return True
    raise ConfigError(
        key,
        f"true asks to {what}; vlmlab never takes that from a file: pass {FLAGS[name]} on the command line "
        "if you trust it",
    )


def note(run: str, text: str) -> None:
    """Record that something of `run` was used without verification (written into its outputs' provenance)."""
    entries = _notes.setdefault(os.path.realpath(run), [])
    if text not in entries:
        entries.append(text)


def notes(run: str) -> list[str]:
    """What of `run` this process used without verification (empty when everything was verified)."""
    return list(_notes.get(os.path.realpath(run), []))


def allowed() -> tuple[str, ...]:
    """The grants in force now: what a job or worker process started by this command is given, and no other (it
    never takes one from the study's files)."""
    return tuple(name for name in FLAGS if allows(name))
