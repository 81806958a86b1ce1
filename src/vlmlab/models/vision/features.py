"""A frozen tower's features, computed once per (tower weights, pixels) and reused by every run that asks again.

A study's variants share their vision tower (study A: one pretrained ViT behind every LLM rung) and keep it
frozen after its pretraining; yet each training step and each evaluation mode would run it again on the same
images. `TowerFeatures` memoizes the tower's output tokens per image, keyed by a hash of the tower's weights
(with its class, the torch version and the device) and of the exact pixel tensor it is given (so the image, its
geometry, its normalization and any perturbation are all part of the key). It serves every variant, seed, stage
and evaluation mode in a process from memory, and other processes (later seeds, parallel variants, `vlmlab
study demo-routing`) from `$VLMLAB_CACHE/tower-features/<tower hash>/`.

It is exact, not approximate: it applies only where the uncached path would compute the same numbers — the tower
is frozen in this forward, no module of it is stochastic or batch-dependent in its current mode (dropout,
batch norm, drop-path), it runs on the CPU with plain tensors — and it checks, against whole batches computed as
the tower would compute them, what it reuses: once per batch size, stored rows (its own and other processes')
must equal the tower's rows in a batch of that size, or the memo is switched off for that tower; and once per
(missing rows, batch size), computing only the missing rows must give the whole batch's numbers, or they are
taken from the whole batch. (A matrix product may take another kernel for a handful of rows: a 32-wide ViT's
single image differs in the last bits from the same image in a batch. The demo's towers do not.)
`VLMLAB_TOWER_FEATURES=0` switches it off.
"""

from __future__ import annotations

import hashlib
import os
import time
import weakref
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vlmlab.cache import cache_root
from vlmlab.progress import console

ENV = "VLMLAB_TOWER_FEATURES"  # "0" switches the memo off
BUDGET_BYTES = 1 << 30  # features kept per tower, in memory and on disk
SHARD_ROWS = 4096  # rows written per shard file
DIGEST = 16  # bytes of a pixel tensor's hash


def enabled() -> bool:
    return os.environ.get(ENV, "1") != "0"


def _stochastic(module: nn.Module) -> bool:
    """A module whose training-mode output is random or depends on the rest of the batch."""
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return module.p > 0
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return True
    for name in ("drop_prob", "drop_path_prob"):  # drop-path (stochastic depth) modules of the SSM / timm families
        if float(getattr(module, name, 0) or 0) > 0:
            return True
    return False


def _weights_hash(vision: nn.Module) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{type(vision).__module__}.{type(vision).__qualname__}|{torch.__version__}".encode())
    for name, tensor in vision.state_dict().items():
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        h.update(tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class _Tower:
    """What is memoized for one tower: its features by pixel digest, what is still to be written to disk."""

    def __init__(self, key: str, directory: Path | None):
        self.key = key
        self.directory = directory
        self.rows: dict[bytes, torch.Tensor] = {}
        self.pending: list[bytes] = []
        self.bytes = 0
        # what this process verified against whole batches: batch sizes whose rows equal the stored ones, and per
        # (missing rows, batch size) whether computing just the missing rows gives the whole batch's numbers
        self.served: set[int] = set()
        self.partial: dict[tuple[int, int], bool] = {}
        self.usable = True
        if directory is not None and directory.is_dir():
            for shard in sorted(directory.glob("*.safetensors")):
                self._read(shard)

    def _read(self, shard: Path) -> None:
        try:
            data = load_file(str(shard))
        except Exception:  # noqa: BLE001 - a damaged shard is a cache miss, never an error
            return
        digests, tokens = data.get("digests"), data.get("tokens")
        if digests is None or tokens is None or digests.shape[0] != tokens.shape[0]:
            return
        for digest, row in zip(digests.numpy(), tokens):
            self.add(bytes(digest), row, written=True)

    def add(self, digest: bytes, row: torch.Tensor, written: bool = False) -> None:
        size = row.numel() * row.element_size()
        if digest in self.rows or self.bytes + size > BUDGET_BYTES:
            return
        self.rows[digest] = row
        self.bytes += size
        if not written:
            self.pending.append(digest)

    def flush(self) -> None:
        """Write the rows computed since the last flush as shards (temp name, then rename)."""
        if self.directory is None or not self.pending:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(self.pending), SHARD_ROWS):
            chunk = self.pending[start : start + SHARD_ROWS]
            name = f"{time.time_ns()}-{os.getpid()}-{start}"
            tmp = self.directory / f".{name}.tmp"
            digests = torch.from_numpy(
                np.frombuffer(b"".join(chunk), dtype=np.uint8).reshape(len(chunk), DIGEST).copy()
            )
            save_file({"digests": digests, "tokens": torch.stack([self.rows[d] for d in chunk])}, str(tmp))
            tmp.rename(self.directory / f"{name}.safetensors")
        self.pending = []


class TowerFeatures:
    """The memo of one process: `tokens(vision, pixels)` returns the tower's tokens (B, N, D) for pixels
    (B, 3, H, W), computing only the rows it has not seen, or None where memoizing would not be exact."""

    def __init__(self, root: Path | None = None):
        self.root = root  # None: memory only
        self._towers: dict[str, _Tower] = {}
        self._stamps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tower -> (weights' versions, key)

    def _key(self, vision: nn.Module, device: torch.device) -> str:
        stamp = tuple((t.data_ptr(), t._version) for t in vision.state_dict().values())  # in-place updates bump it
        known = self._stamps.get(vision)
        if known is None or known[0] != stamp:
            known = (stamp, f"{_weights_hash(vision)}-{device.type}")
            self._stamps[vision] = known
        return known[1]

    def applies(self, vision: nn.Module, pixels: torch.Tensor) -> bool:
        """Memoizing gives exactly what the tower computes: frozen here, deterministic per row, plain CPU tensors."""
        if not enabled() or pixels.device.type != "cpu" or pixels.shape[0] == 0:
            return False
        params = list(vision.parameters())
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return False
        if any(type(p) is not nn.Parameter or p.device.type != "cpu" for p in params):  # sharded (DTensor) or moved
            return False
        return not any(m.training and _stochastic(m) for m in vision.modules())

    def tokens(self, vision: nn.Module, pixels: torch.Tensor) -> torch.Tensor | None:
        if not self.applies(vision, pixels):
            return None
        key = self._key(vision, pixels.device)
        tower = self._towers.get(key)
        if tower is None:
            tower = self._towers[key] = _Tower(key, None if self.root is None else self.root / key)
        if not tower.usable:
            return None
        # the bytes of each row (any dtype: bfloat16 has no numpy type), salted with the dtype
        flat = pixels.detach().contiguous().reshape(pixels.shape[0], -1).view(torch.uint8)
        salt = str(pixels.dtype).encode()
        digests = [hashlib.blake2b(row.numpy().data, digest_size=DIGEST, salt=salt[:16]).digest() for row in flat]
        n = len(digests)
        missing = [i for i, d in enumerate(digests) if d not in tower.rows]
        if n not in tower.served or (missing and (len(missing), n) not in tower.partial):
            return self._check(vision, pixels, digests, missing, tower)
        if missing:
            if tower.partial[(len(missing), n)]:  # the missing rows alone give what the whole batch would
                computed = vision(pixels[missing]).tokens.detach()
            else:
                computed = vision(pixels).tokens.detach()[missing]
            for i, row in zip(missing, computed):
                tower.add(digests[i], row)
            fresh = dict(zip((digests[i] for i in missing), computed))
            return torch.stack([tower.rows.get(d, fresh.get(d)) for d in digests])  # fresh: past the budget
        return torch.stack([tower.rows[d] for d in digests])

    def _check(self, vision, pixels, digests, missing, tower: _Tower) -> torch.Tensor:
        """Compute the batch as the tower would (the uncached numbers), and learn from it what may be reused: rows
        stored earlier (here or by another process) must equal it, or the memo is switched off for this tower;
        rows computed as a smaller batch of the missing ones are used only where they equal it too."""
        whole = vision(pixels).tokens.detach()
        n = len(digests)
        present = [(i, d) for i, d in enumerate(digests) if d in tower.rows]
        if not all(torch.equal(whole[i], tower.rows[d]) for i, d in present):
            tower.usable = False
            tower.rows.clear()
            console.print(
                "tower features are computed at every use for this tower: stored rows differ from a batch of "
                f"{n} ({ENV})",
                highlight=False,
            )
            return whole
        if present:
            tower.served.add(n)
        if missing and (len(missing), n) not in tower.partial:
            alone = vision(pixels[missing]).tokens.detach() if len(missing) < n else whole
            tower.partial[(len(missing), n)] = torch.equal(alone, whole[missing])
        for i in missing:
            tower.add(digests[i], whole[i])
        return whole

    def flush(self) -> None:
        """Write what was computed since the last flush, for other processes (a stage's or an evaluation's end)."""
        for tower in self._towers.values():
            if tower.usable:
                tower.flush()


_SHARED: TowerFeatures | None = None


def shared() -> TowerFeatures:
    """The process's memo, stored under `$VLMLAB_CACHE/tower-features` (read when a tower is first seen)."""
    global _SHARED
    root = cache_root() / "tower-features"
    if _SHARED is None or _SHARED.root != root:
        _SHARED = TowerFeatures(root)
    return _SHARED


def flush() -> None:
    """Write the process memo's new rows to the cache (called where a stage or an evaluation ends)."""
    if _SHARED is not None:
        _SHARED.flush()
