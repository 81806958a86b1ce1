"""Frozen-tower features memoized per (tower weights, pixels): exactly what the tower computes, shared, invalidated."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from torch import nn

from vlmlab.config import config_from_dict
from vlmlab.data.eval_mode import BLIND
from vlmlab.evaluation.evaluate import evaluate_run
from vlmlab.models.vision import features
from vlmlab.models.vision.base import VisionFeatures
from vlmlab.models.vlm import VisionLanguageModel
from vlmlab.train.trainer import Trainer


def _train_and_eval(raw: dict, out, memoize: bool, monkeypatch) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    monkeypatch.setattr(VisionLanguageModel, "memoize_tower", memoize)
    cfg = config_from_dict(raw)
    model = Trainer(cfg, out).run_training().model
    clean = evaluate_run(out, model=model, cfg=cfg)
    assert clean["overall"]["n"] == 24
    evaluate_run(out, mode=BLIND, model=model, cfg=cfg)
    losses = [
        json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines() if '"loss"' in line
    ]
    return pd.read_parquet(out / "predictions.parquet"), pd.read_parquet(out / "predictions_blind.parquet"), losses


def test_memoized_features_give_the_uncached_predictions_exactly(tiny_raw, tmp_path, monkeypatch):
    """A frozen tower (pretrained, then align + finetune) trained and evaluated with and without the memo: the
    same losses at every step and the same predictions and confidences, clean and blind."""
    monkeypatch.setenv("VLMLAB_CACHE", str(tmp_path / "cache"))
    tiny_raw["train"]["stages"].insert(
        0, {"name": "vision-pretrain", "max_steps": 3, "batch_size": 16, "lr": {"vision": 1e-3}}
    )
    tiny_raw["train"]["stages"][2]["max_steps"] = 12
    plain = _train_and_eval(tiny_raw, tmp_path / "plain", False, monkeypatch)
    assert not (tmp_path / "cache" / "tower-features").exists()
    memo = _train_and_eval(tiny_raw, tmp_path / "memo", True, monkeypatch)
    towers = features.shared()._towers.values()
    assert any(t.usable and t.served and len(t.rows) >= 5 for t in towers)  # it served the frozen tower's rows
    shards = list((tmp_path / "cache" / "tower-features").glob("*/*.safetensors"))
    assert len(shards) >= 1  # the frozen tower's features were stored for later runs
    assert memo[2] == plain[2] and len(plain[2]) == 14  # every align and finetune step's loss, bit for bit
    for a, b in zip(plain[:2], memo[:2]):
        pd.testing.assert_frame_equal(a, b)
    assert plain[0]["confidence"].nunique() > 5  # per-item numbers to compare (the answers of a 14-step model agree)
    # a third run in a fresh process memo reads the stored features: still the same predictions
    monkeypatch.setattr(features, "_SHARED", None)
    again = _train_and_eval(tiny_raw, tmp_path / "again", True, monkeypatch)
    pd.testing.assert_frame_equal(again[0], plain[0])


class _Counting(nn.Module):
    """A stand-in tower: each image's pixels scaled elementwise (exactly the same numbers in any batch), counting
    the rows it computes."""

    def __init__(self, batch_dependent: bool = False):
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 3 * 4 * 4))
        self.rows = 0
        self.batch_dependent = batch_dependent

    def forward(self, pixels: torch.Tensor) -> VisionFeatures:
        self.rows += pixels.shape[0]
        tokens = (pixels.flatten(1) * self.scale).unsqueeze(1)
        if self.batch_dependent:  # e.g. a normalization over the batch
            tokens = tokens - tokens.mean(0, keepdim=True)
        return VisionFeatures(tokens=tokens, grid=(1, 1))


def _frozen(tower: nn.Module) -> nn.Module:
    for p in tower.parameters():
        p.requires_grad_(False)
    return tower


def test_each_image_is_computed_once_and_weights_invalidate(tmp_path):
    memo = features.TowerFeatures(tmp_path)
    tower = _frozen(_Counting())
    x = torch.randn(8, 3, 4, 4)
    first = memo.tokens(tower, x)
    assert torch.equal(first, tower.__class__.forward(tower, x).tokens)
    memo.tokens(tower, torch.cat([x[:3], torch.randn(2, 3, 4, 4)]))  # learns a batch of 5 with 2 new rows
    tower.rows = 0
    again = memo.tokens(tower, torch.cat([x[2:5], torch.randn(2, 3, 4, 4)]))
    assert tower.rows == 2  # now only the two new images run through the tower
    assert torch.equal(again[:3], first[2:5])
    with torch.no_grad():
        tower.scale.add_(1.0)  # new weights: a new key, nothing reused
    tower.rows = 0
    changed = memo.tokens(tower, x)
    assert tower.rows >= 8 and not torch.equal(changed, first)
    memo.flush()
    other = features.TowerFeatures(tmp_path)  # another process: reads the stored rows
    counting = _frozen(_Counting())
    counting.load_state_dict(tower.state_dict())
    counting.rows = 0
    read = other.tokens(counting, x)
    assert torch.equal(read, changed)


def test_bfloat16_pixels_are_memoized(tmp_path):
    """An imported checkpoint evaluated in bfloat16 gives bfloat16 pixels (numpy has no such type): the key is the
    row's bytes, salted with its dtype, and the rows are served like any others."""
    memo = features.TowerFeatures(tmp_path)
    tower = _frozen(_Counting()).to(torch.bfloat16)
    x = torch.randn(4, 3, 4, 4).to(torch.bfloat16)
    expected = _Counting.forward(tower, x).tokens
    for _ in range(2):  # computed, then checked against a whole batch of its size
        assert torch.equal(memo.tokens(tower, x), expected)
    tower.rows = 0
    assert torch.equal(memo.tokens(tower, x), expected) and tower.rows == 0  # served from the memo


def test_not_memoized_where_it_would_not_be_exact(tmp_path):
    memo = features.TowerFeatures(tmp_path)
    x = torch.randn(6, 3, 4, 4)
    trains = _Counting()  # requires grad: the tower trains in this forward
    assert memo.tokens(trains, x) is None
    with torch.no_grad():
        assert memo.tokens(trains, x) is not None  # the same tower under no_grad is frozen for this call
    dropout = nn.Sequential(nn.Dropout(0.1))
    assert not memo.applies(_frozen(dropout).train(), x)
    assert memo.applies(dropout.eval(), x)
    varying, memo = _frozen(_Counting(batch_dependent=True)), features.TowerFeatures(tmp_path / "other")
    memo.tokens(varying, x)
    memo.tokens(varying, x)  # the same batch again: its rows are the stored ones
    out = memo.tokens(varying, x[:3])  # another batch gives other rows for the same images: switched off
    assert torch.equal(out, _Counting.forward(varying, x[:3]).tokens)
    assert memo.tokens(varying, x) is None


def test_switched_off_by_the_environment(tmp_path, monkeypatch):
    tower, x = _frozen(_Counting()), torch.zeros(2, 3, 4, 4)
    assert features.TowerFeatures(tmp_path).applies(tower, x)
    monkeypatch.setenv(features.ENV, "0")
    assert not features.TowerFeatures(tmp_path).applies(tower, x)


@pytest.mark.parametrize("tower", ["vim", "vmamba"])
def test_ssm_towers_memoize_exactly(tower, tmp_path):
    """The SSM towers' rows do not depend on their batch either: the memo serves them."""
    from vlmlab.registry import VISION_ENCODERS

    cls = VISION_ENCODERS.get(tower)
    params = (
        {"patch_size": 8, "hidden_size": 32, "num_layers": 1, "d_state": 4}
        if tower == "vim"
        else {"patch_size": 8, "hidden_size": 16, "depths": [1, 1], "tap_stage": 2, "d_state": 4}
    )
    torch.manual_seed(0)
    vision = _frozen(cls.build(cls.Params(**params), image_size=32)).train()
    x = torch.randn(5, 3, 32, 32)
    memo = features.TowerFeatures(tmp_path)
    assert torch.equal(memo.tokens(vision, x), vision(x).tokens)
    assert torch.equal(memo.tokens(vision, x[1:3]), vision(x[1:3]).tokens)
    assert memo._towers and all(t.usable for t in memo._towers.values())
