"""Selective scan (pure chunked path vs a token-by-token reference) and the `vim` / `vmamba` encoders."""

from __future__ import annotations

import pytest
import torch

from vlmlab.models.vision.mamba_blocks import cross_merge, cross_scan
from vlmlab.models.vision.selective_scan import cuda_kernel_available, selective_scan, selective_scan_reference
from vlmlab.registry import VISION_ENCODERS


def _inputs(b=2, d=6, length=37, n=4, groups=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape_bc = (b, n, length) if groups is None else (b, groups, n, length)
    return dict(
        u=torch.randn(b, d, length, generator=g),
        delta=torch.randn(b, d, length, generator=g) * 0.5,
        A=-torch.rand(d, n, generator=g) * 3 - 0.1,
        B=torch.randn(*shape_bc, generator=g),
        C=torch.randn(*shape_bc, generator=g),
        D=torch.randn(d, generator=g),
        z=torch.randn(b, d, length, generator=g),
        delta_bias=torch.randn(d, generator=g) * 0.1,
    )


@pytest.mark.parametrize("chunk", [1, 8, 64])
@pytest.mark.parametrize("groups", [None, 2])
def test_chunked_parallel_scan_matches_the_sequential_reference(chunk, groups):
    x = _inputs(groups=groups)
    ours = selective_scan(**x, chunk=chunk, backend="torch")
    ref = selective_scan_reference(**x)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=1e-4)


def test_scan_gradients_match_the_reference():
    x = {k: v.double().requires_grad_(True) for k, v in _inputs(length=20).items()}
    selective_scan(**x, chunk=8, backend="torch").sum().backward()
    ours = {k: v.grad.clone() for k, v in x.items()}
    for v in x.values():
        v.grad = None
    selective_scan_reference(**x).sum().backward()
    for k, v in x.items():
        torch.testing.assert_close(ours[k], v.grad, rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.skipif(not (torch.cuda.is_available() and cuda_kernel_available()), reason="needs CUDA and mamba-ssm")
def test_cuda_kernel_agrees_with_the_pure_path():  # pragma: no cover - runs only where the kernel is installed
    x = {k: v.cuda() for k, v in _inputs(d=16, length=128).items()}
    torch.testing.assert_close(
        selective_scan(**x, backend="cuda"), selective_scan(**x, backend="torch"), rtol=1e-3, atol=1e-3
    )


def test_cross_scan_and_merge_are_inverse_up_to_the_four_copies():
    x = torch.randn(2, 3, 4, 5)
    assert torch.equal(cross_merge(cross_scan(x), 4, 5), 4 * x)


def test_vim_gives_a_token_grid_and_every_parameter_learns():
    cls = VISION_ENCODERS.get("vim")
    enc = cls.build(cls.Params(patch_size=8, hidden_size=32, num_layers=2, d_state=4), image_size=32)
    feats = enc(torch.randn(2, 3, 32, 32))
    assert feats.tokens.shape == (2, 16, 32) and feats.grid == (4, 4) and enc.num_tokens == 16
    feats.tokens.pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


def test_vmamba_stage_shapes_tap_and_gradients():
    cls = VISION_ENCODERS.get("vmamba")
    enc = cls.build(cls.Params(patch_size=4, hidden_size=16, depths=[1, 1, 1], tap_stage=3, d_state=4), image_size=32)
    maps = enc.stage_maps(torch.randn(2, 3, 32, 32))
    assert [tuple(m.shape) for m in maps] == [(2, 8, 8, 16), (2, 4, 4, 32), (2, 2, 2, 64)]
    feats = enc(torch.randn(2, 3, 32, 32))
    assert feats.tokens.shape == (2, 4, 64) and enc.embed_dim == 64 and feats.grid == (2, 2)
    feats.tokens.pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    two = cls.build(cls.Params(patch_size=4, hidden_size=16, depths=[1, 1, 1], tap_stage=2, d_state=4), image_size=32)
    assert two.num_tokens == 16 and len(two.stages) == 2  # stages after the tapped one are not built
    from vlmlab.errors import ConfigError

    with pytest.raises(ConfigError, match="tap_stage"):
        cls.build(cls.Params(depths=[1, 1], tap_stage=3), image_size=32)


@pytest.mark.parametrize(
    "vision",
    [
        {"id": "vim", "patch_size": 16, "hidden_size": 32, "num_layers": 1, "d_state": 4},
        {"id": "vmamba", "patch_size": 4, "hidden_size": 8, "depths": [1, 1, 1], "d_state": 4},
    ],
)
def test_a_vlm_trains_with_an_ssm_tower(tiny_raw, tmp_path, vision):
    from vlmlab.config import config_from_dict
    from vlmlab.train.trainer import Trainer

    tiny_raw["model"]["vision"] = vision
    tiny_raw["train"]["stages"][1]["lr"]["vision"] = 1e-3
    result = Trainer(config_from_dict(tiny_raw), tmp_path / "run", resume=False).run_training()
    assert result.model.num_image_tokens == 4 and result.trainable["finetune"]["vision"] > 0


def test_builtin_vision_study_varies_tower_objective_and_interface_only(tmp_path):
    from vlmlab.cli import resolve_study_path
    from vlmlab.study.control import check_config_control
    from vlmlab.study.spec import expand_variants, load_study_spec

    spec, spec_dir = load_study_spec(resolve_study_path("demo-vision"))
    variants = expand_variants(spec, spec_dir, {"shapes": str(tmp_path / "s"), "pretrain": str(tmp_path / "p")})
    control = check_config_control(spec, variants)
    assert sorted(control["declared"]) == [
        "data.image.geometry",
        "model.projector.id",
        "model.vision",
        "train.stages.0.objective",
    ] and spec.seeds == [0, 1]
    assert (
        len(variants) == 18
        and len({v.name for v in variants}) == 9
        and {v.cfg.train.stages[0].objective for v in variants} == {"classify", "dense"}
    )
    stable = [v for v in variants if v.cfg.model.projector.id == "fused-gelu-mlp" and v.seed == 0]
    assert len(stable) == 3 and all(v.cfg.data.image.geometry == "letterbox-square" for v in stable)
    stage = variants[0].cfg.train.stages[0]  # the towers' own pretraining set, scored on its val split
    assert stage.name == "vision-pretrain" and stage.data.path == str(tmp_path / "p") and stage.heldout_split == "val"
    from vlmlab.train.vision_cache import stage_key

    for name in {v.name for v in variants}:  # one tower per level, shared by both seeds
        assert len({stage_key(v.cfg, 0) for v in variants if v.name == name}) == 1
    assert sorted({v.cfg.model.vision.id for v in variants}) == ["vim", "vit", "vmamba"]
