"""`model.llm: {id: hf, path: DIR}` on a checkpoint laid out like a hub download (shards + index + tokenizer)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from vlmlab import grants
from vlmlab.config import config_from_dict
from vlmlab.errors import ConfigError, UserError
from vlmlab.models.build import build_model, enable_gradient_checkpointing
from vlmlab.registry import LLM_BACKBONES

TEXTS = ["what is the red shape?", "what color is the shape?", "circle", "red", "yes", "no"]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """A tiny LLaMA-3-style LM saved in several safetensors shards with an index, plus its tokenizer files."""
    cls = LLM_BACKBONES.get("llama3-tiny")
    llm = cls.build(cls.Params(hidden_size=32, num_layers=2, num_heads=4, init="random"), texts=TEXTS)
    path = tmp_path_factory.mktemp("hub-layout")
    llm.lm.save_pretrained(path, max_shard_size="100KB")
    llm.tokenizer.save_pretrained(path)
    return path, llm


def test_layout_is_what_a_hub_checkpoint_has(sharded):
    path, _ = sharded
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"} <= names
    shards = sorted(n for n in names if n.startswith("model-") and n.endswith(".safetensors"))
    assert len(shards) >= 2
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)


def test_hf_loads_the_sharded_checkpoint_with_its_own_template(sharded):
    path, llm = sharded
    cls = LLM_BACKBONES.get("hf")
    loaded = cls.build(cls.Params(path=str(path)))
    ids = torch.tensor([llm.encode_prompt("what is the red shape?")])
    torch.testing.assert_close(loaded.lm(ids).logits, llm.lm.eval()(ids).logits)
    assert loaded.render_prompt("q") == llm.render_prompt("q")  # LLaMA-3's template came with the checkpoint
    assert "<|start_header_id|>" in loaded.render_prompt("q")
    forced = cls.build(cls.Params(path=str(path), template="vicuna"))
    assert forced.render_prompt("q").startswith(llm.tokenizer.bos_token + "USER:")


def test_a_vlm_trains_on_the_hf_backbone_with_gradient_checkpointing(sharded, tiny_raw, tmp_path):
    path, _ = sharded
    tiny_raw["model"]["llm"] = {"id": "hf", "path": str(path)}
    model = build_model(config_from_dict(tiny_raw))
    assert enable_gradient_checkpointing(model) == ["llm", "vision"]
    from vlmlab.data.dataset import VQADataset
    from vlmlab.data.sources import load_training_items

    cfg = config_from_dict(tiny_raw)
    items = load_training_items(cfg)[:4]
    data = VQADataset(items, model.llm, cfg.data.image, model.num_image_tokens, with_answers=True)
    b = data.collate([data[i] for i in range(4)])
    inputs = dict(
        input_ids=b.input_ids,
        attention_mask=b.attention_mask,
        image_mask=b.image_mask,
        pixel_values=b.pixel_values,
        labels=b.labels,
    )
    model.train()
    model(**inputs).loss.backward()
    with_ckpt = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.llm.lm.gradient_checkpointing_disable()
    model.vision.tower.gradient_checkpointing_disable()
    model(**inputs).loss.backward()
    for name, grad in with_ckpt.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6)


def test_missing_or_corrupt_checkpoints_give_one_line(sharded, tmp_path):
    path, _ = sharded
    cls = LLM_BACKBONES.get("hf")
    with pytest.raises(UserError, match=r"config.json missing\) \[model.llm.path\]"):
        cls.build(cls.Params(path=str(tmp_path / "nowhere")))
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in path.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    shard = sorted(broken.glob("model-*.safetensors"))[0]
    shard.write_bytes(b"\x00garbage, not a safetensors file")
    with pytest.raises(UserError, match=r"cannot load checkpoint"):
        cls.build(cls.Params(path=str(broken)))
    missing_shard = tmp_path / "missing-shard"
    missing_shard.mkdir()
    for f in path.iterdir():
        if f != sorted(path.glob("model-*.safetensors"))[-1]:
            (missing_shard / f.name).write_bytes(f.read_bytes())
    with pytest.raises(UserError, match=r"cannot load checkpoint"):
        cls.build(cls.Params(path=str(missing_shard)))


def test_corrupt_checkpoint_from_the_cli_is_one_line_and_nonzero(sharded, tmp_path):
    path, _ = sharded
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in path.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "config.json").write_text("{ not json")
    config = tmp_path / "c.yaml"
    config.write_text(
        "model:\n  vision: {id: vit, patch_size: 16, hidden_size: 32, num_layers: 1, num_heads: 2}\n"
        f"  llm: {{id: hf, path: '{broken}'}}\n"
        "data:\n  train: {task: easy-vqa, limit: 8}\n  image: {size: 32}\n"
        "train:\n  stages: [{name: finetune, max_steps: 1, lr: {llm: 1.0e-3}}]\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "vlmlab", "train", str(config), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and str(broken) in lines[0] and "Traceback" not in proc.stderr


def test_pickle_weights_are_refused_unless_the_user_opts_in(sharded, tmp_path):
    _, llm = sharded
    path = tmp_path / "pickled"
    llm.lm.config.save_pretrained(path)
    llm.tokenizer.save_pretrained(path)
    torch.save(llm.lm.state_dict(), path / "pytorch_model.bin")
    cls = LLM_BACKBONES.get("hf")
    with pytest.raises(
        UserError, match=r"pytorch_model.bin: pickle weights can run code .* set model.llm.allow_pickle: true"
    ):
        cls.build(cls.Params(path=str(path)))
    with pytest.raises(ConfigError, match=r"model.llm.allow_pickle: true asks to load pickle .* pass --allow-pickle"):
        cls.build(cls.Params(path=str(path), allow_pickle=True))  # a config alone cannot allow it
    with grants.granted("allow_pickle"):  # the command line's --allow-pickle
        loaded = cls.build(cls.Params(path=str(path), allow_pickle=True))
    ids = torch.tensor([llm.encode_prompt("what is the red shape?")])
    torch.testing.assert_close(loaded.lm(ids).logits, llm.lm.eval()(ids).logits)
    assert cls.Params(path="x").trust_remote_code is False  # remote code stays off unless set
