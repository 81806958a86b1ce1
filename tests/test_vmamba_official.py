"""The official VMamba (VSSM v0) key map: a synthetic release state dict with the official names and shapes."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from vlmlab import grants
from vlmlab.errors import ConfigError, UserError
from vlmlab.models.vision.ssm import VMambaEncoder

DIM, DEPTHS, D_STATE = 16, [1, 2, 2, 1], 4  # a tiny VSSM: dims 16/32/64/128


def official_state(dim=DIM, depths=DEPTHS, d_state=D_STATE, num_classes=10) -> dict[str, torch.Tensor]:
    """Every tensor of `VSSM(patch_size=4, depths, dims=dim, d_state)` from the release, with random values."""
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    sd = {
        "patch_embed.proj.weight": r(dim, 3, 4, 4),
        "patch_embed.proj.bias": r(dim),
        "patch_embed.norm.weight": r(dim),
        "patch_embed.norm.bias": r(dim),
    }
    for i, depth in enumerate(depths):
        c = dim * 2**i
        inner, rank = 2 * c, math.ceil(c / 16)
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            sd.update(
                {
                    p + "ln_1.weight": r(c),
                    p + "ln_1.bias": r(c),
                    p + "self_attention.in_proj.weight": r(2 * inner, c),
                    p + "self_attention.conv2d.weight": r(inner, 1, 3, 3),
                    p + "self_attention.conv2d.bias": r(inner),
                    p + "self_attention.x_proj_weight": r(4, rank + 2 * d_state, inner),
                    p + "self_attention.dt_projs_weight": r(4, inner, rank),
                    p + "self_attention.dt_projs_bias": r(4, inner),
                    p + "self_attention.A_logs": r(4 * inner, d_state),
                    p + "self_attention.Ds": r(4 * inner),
                    p + "self_attention.out_norm.weight": r(inner),
                    p + "self_attention.out_norm.bias": r(inner),
                    p + "self_attention.out_proj.weight": r(c, inner),
                }
            )
        if i < len(depths) - 1:
            sd.update(
                {
                    f"layers.{i}.downsample.reduction.weight": r(2 * c, 4 * c),
                    f"layers.{i}.downsample.norm.weight": r(4 * c),
                    f"layers.{i}.downsample.norm.bias": r(4 * c),
                }
            )
    last = dim * 2 ** (len(depths) - 1)
    sd.update(
        {"norm.weight": r(last), "norm.bias": r(last), "head.weight": r(num_classes, last), "head.bias": r(num_classes)}
    )
    return sd


def _tower(path, tap, depths=DEPTHS, **extra):
    params = VMambaEncoder.Params(
        patch_size=4,
        hidden_size=DIM,
        depths=depths,
        tap_stage=tap,
        d_state=D_STATE,
        mlp_ratio=0,
        path=str(path),
        **extra,
    )
    return VMambaEncoder.build(params, image_size=64)


@pytest.mark.parametrize("tap", [3, 4])
def test_every_tower_parameter_comes_from_the_release(tmp_path, tap):
    sd = official_state()
    save_file(sd, str(tmp_path / "vssm.safetensors"))
    tower = _tower(tmp_path / "vssm.safetensors", tap)
    report = tower.official_load
    own = tower.state_dict()
    assert torch.equal(own["stem.weight"], sd["patch_embed.proj.weight"])
    assert torch.equal(own["stages.1.1.ss2d.A_log"], sd["layers.1.blocks.1.self_attention.A_logs"])
    assert torch.equal(own["stages.2.0.ss2d.dt_proj_weight"], sd["layers.2.blocks.0.self_attention.dt_projs_weight"])
    assert torch.equal(own["merges.1.reduce.weight"], sd["layers.1.downsample.reduction.weight"])
    if tap == 4:  # the whole backbone: only the classifier is left over, the final norm is the tower's out_norm
        assert sorted(report["unused"]) == ["head.bias", "head.weight"] and report["initialised"] == []
        assert torch.equal(own["out_norm.weight"], sd["norm.weight"])
    else:  # stage 4, the merge into it, the final norm and the head have no place; out_norm starts at identity
        assert set(report["unused"]) == {
            k for k in sd if k.startswith(("layers.3.", "layers.2.downsample", "norm.", "head."))
        }
        assert report["initialised"] == ["out_norm.weight", "out_norm.bias"]
    feats = tower(torch.randn(2, 3, 64, 64))
    assert feats.tokens.shape == (2, (64 // 4 // 2 ** (tap - 1)) ** 2, DIM * 2 ** (tap - 1))


def test_the_original_pth_needs_allow_pickle_and_loads_weights_only(tmp_path):
    torch.save({"model": official_state(), "epoch": 292}, tmp_path / "vssm.pth")
    with pytest.raises(UserError, match="pickle weights can run code .* model.vision.allow_pickle: true"):
        _tower(tmp_path / "vssm.pth", 3)
    with pytest.raises(ConfigError, match="model.vision.allow_pickle: true asks to load pickle .* --allow-pickle"):
        _tower(tmp_path / "vssm.pth", 3, allow_pickle=True)  # the config asks; only the command line allows
    with grants.granted("allow_pickle"):
        tower = _tower(tmp_path / "vssm.pth", 3, allow_pickle=True)
    assert tower.official_load["initialised"] == ["out_norm.weight", "out_norm.bias"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"d_state": 8}, "has shape .*check hidden_size, depths, d_state"),
        ({"depths": [1, 3, 2]}, "provides no weights for 'stages.1.2.norm1.weight'"),
        ({"mlp_ratio": 2.0}, "provides no weights for .*mlp"),
    ],
)
def test_a_tower_that_does_not_match_the_release_is_one_line(tmp_path, change, message):
    save_file(official_state(), str(tmp_path / "vssm.safetensors"))
    fields = dict(
        patch_size=4,
        hidden_size=DIM,
        depths=DEPTHS[:3],
        tap_stage=3,
        d_state=D_STATE,
        mlp_ratio=0,
        path=str(tmp_path / "vssm.safetensors"),
    )
    fields.update(change)
    with pytest.raises(UserError, match=message):
        VMambaEncoder.build(VMambaEncoder.Params(**fields), image_size=64)
