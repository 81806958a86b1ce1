"""Loading weights from a local dir safely: safetensors only, unless the user opts in to pickle files."""

from __future__ import annotations

from pathlib import Path

from vlmlab.errors import UserError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def safetensors_only(path: Path, allow_pickle: bool, key: str) -> dict:
    """`from_pretrained` kwargs that refuse pickle weights (they can run code when loaded) unless allowed.

    A dir with only pickle weights is one line naming the file and the key (`<key>.allow_pickle`) to opt in.
    """
    if allow_pickle:
        return {}
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise UserError(
                f"{path / pickles[0]}: pickle weights can run code when loaded; convert them to "
                f"safetensors, or set {key}.allow_pickle: true if you trust this file"
            )
    return {"use_safetensors": True}
