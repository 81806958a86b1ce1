"""Loading weights from a local dir safely: safetensors only, unless the person running vlmlab opts in to pickle
files (the config asks with `<key>.allow_pickle: true`, the command line allows it with --allow-pickle)."""

from __future__ import annotations

from pathlib import Path

from vlmlab import grants
from vlmlab.errors import UserError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def safetensors_only(path: Path, allow_pickle: bool, key: str) -> dict:
    """`from_pretrained` kwargs that refuse pickle weights (they can run code when loaded) unless allowed.

    A dir with safetensors is always read from them. A dir with only pickle weights needs both the config's ask
    (`<key>.allow_pickle`) and the command line's --allow-pickle; without them it is one line naming the file.
    """
    if any(path.glob("*.safetensors")):
        return {"use_safetensors": True}
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES) if path.is_dir() else []
    if not pickles:
        return {"use_safetensors": True}
    option = key if key.startswith("--") else f"{key}.allow_pickle"
    if not allow_pickle:
        ask = "" if key.startswith("--") else f"set {option}: true and "
        raise UserError(
            f"{path / pickles[0]}: pickle weights can run code when loaded; convert them to safetensors, or "
            f"{ask}pass --allow-pickle if you trust this file"
        )
    grants.permit(
        "allow_pickle", True, option, f"load pickle weights from {path / pickles[0]} (unpickling can run code)"
    )
    return {}
