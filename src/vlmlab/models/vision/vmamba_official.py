"""Load the official VMamba release (MzeroMiko/VMamba, VSSM v0 checkpoints) into vlmlab's `vmamba` tower.

The released VSSM-T/S/B checkpoints use the module names of the original code: `patch_embed.{proj,norm}`,
`layers.<i>.blocks.<j>.{ln_1, self_attention.*}`, `layers.<i>.downsample.{reduction,norm}` (the merge at the
*end* of stage i), a final `norm` over the last stage and a classification `head`. Their SS2D has the same
parameters and scan order as `vlmlab.models.vision.mamba_blocks.SS2D`, and their blocks have no MLP, so a
tower built with `mlp_ratio: 0`, `patch_size: 4`, `hidden_size` = the release's first width and its depths
takes the weights one to one. Stages after `tap_stage` are not built; their weights (and the head) are
reported as unused. The tower's `out_norm` comes from the release's final `norm` only when the last stage
is tapped; otherwise it keeps its identity initialisation.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from vlmlab import grants
from vlmlab.errors import UserError

_SS2D = {  # official SS2D parameter -> vlmlab SS2D parameter
    "in_proj.weight": "in_proj.weight",
    "conv2d.weight": "conv.weight",
    "conv2d.bias": "conv.bias",
    "x_proj_weight": "x_proj_weight",
    "dt_projs_weight": "dt_proj_weight",
    "dt_projs_bias": "dt_proj_bias",
    "A_logs": "A_log",
    "Ds": "D",
    "out_norm.weight": "out_norm.weight",
    "out_norm.bias": "out_norm.bias",
    "out_proj.weight": "out_proj.weight",
}
_BLOCK = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.(ln_1|self_attention)\.(.+)")
_DOWN = re.compile(r"layers\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)")


def official_name(key: str, n_stages: int, last_stage_built: bool) -> str | None:
    """The vlmlab name of an official key, or None when the built tower has no such part (later stages, head)."""
    if key.startswith("patch_embed.proj."):
        return "stem." + key.removeprefix("patch_embed.proj.")
    if key.startswith("patch_embed.norm."):
        return "stem_norm." + key.removeprefix("patch_embed.norm.")
    if m := _BLOCK.fullmatch(key):
        stage, block, part, rest = int(m[1]), m[2], m[3], m[4]
        if stage >= n_stages:
            return None
        if part == "ln_1":
            return f"stages.{stage}.{block}.norm1.{rest}"
        return f"stages.{stage}.{block}.ss2d.{_SS2D[rest]}" if rest in _SS2D else key
    if m := _DOWN.fullmatch(key):
        stage = int(m[1])  # merges[i] feeds stage i+1: it exists only when stage i+1 is built
        if stage + 1 >= n_stages:
            return None
        return f"merges.{stage}.{'reduce' if m[2] == 'reduction' else 'norm'}.{m[3]}"
    if key.startswith("norm."):
        return "out_norm." + key.removeprefix("norm.") if last_stage_built else None
    if key.startswith("head."):
        return None
    return key  # unknown: reported as unexpected by the loader


def read_official_state(path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """The state dict of a release file: `.safetensors`, or the original `.pth` ({"model": ...}, weights only)."""
    if not path.is_file():
        raise UserError(f"{path}: VMamba checkpoint not found [model.vision.path]")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if not allow_pickle:
        raise UserError(
            f"{path}: pickle weights can run code when loaded; convert them to safetensors, or set "
            "model.vision.allow_pickle: true and pass --allow-pickle if you trust this file"
        )
    grants.permit("allow_pickle", True, "model.vision.allow_pickle", f"load pickle weights from {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise UserError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") from None
    return state.get("model", state) if isinstance(state, dict) else {}


def load_official_vmamba(tower: torch.nn.Module, path: str | Path, allow_pickle: bool = False) -> dict[str, list[str]]:
    """Copy an official checkpoint into `tower`; any shape mismatch, unknown key or uncovered parameter is one
    line naming the key. Returns {"unused": official keys the built tower has no place for,
    "initialised": tower parameters the release does not provide}."""
    path = Path(path)
    state = read_official_state(path, allow_pickle)
    stages = 1 + max((int(m[1]) for k in state if (m := re.match(r"layers\.(\d+)\.", k))), default=0)
    built = len(tower.stages)
    own = tower.state_dict()
    mapped, unused = {}, []
    for key, tensor in state.items():
        name = official_name(key, built, last_stage_built=built == stages)
        if name is None:
            unused.append(key)
            continue
        if name not in own:
            raise UserError(f"{path}: unexpected tensor {key!r} (is it a VSSM v0 release? does mlp_ratio: 0 match?)")
        if own[name].shape != tensor.shape:
            raise UserError(
                f"{path}: {key} has shape {tuple(tensor.shape)} but model.vision's {name} has "
                f"{tuple(own[name].shape)} (check hidden_size, depths, d_state, patch_size)"
            )
        mapped[name] = tensor
    initialised = [n for n in own if n not in mapped]
    if any(not n.startswith("out_norm.") for n in initialised):
        first = next(n for n in initialised if not n.startswith("out_norm."))
        raise UserError(
            f"{path}: provides no weights for {first!r} (and {len(initialised) - 1} more); "
            "the tower has more blocks or parts than the release (depths, mlp_ratio: 0)"
        )
    tower.load_state_dict(mapped, strict=False)
    return {"unused": unused, "initialised": initialised}
