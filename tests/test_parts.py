"""Every registered part builds from a tiny config and honours its interface."""

from __future__ import annotations

import pytest
import torch

from vlmlab.config import config_from_dict
from vlmlab.models.build import build_model
from vlmlab.registry import LLM_BACKBONES, PROJECTORS, VISION_ENCODERS

TEXTS = ["what is the red shape?", "what color is the shape?", "circle", "red", "yes", "no"]


@pytest.mark.parametrize("family,has_cls", [("vit", True), ("clip", True), ("siglip", False), ("dinov2", True)])
@pytest.mark.parametrize("use_cls", [False, True])
def test_vit_families_give_tokens_and_grid(family, has_cls, use_cls):
    cls = VISION_ENCODERS.get("vit")
    params = cls.Params(
        family=family, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, use_cls=use_cls, feature_layer=-2
    )
    enc = cls.build(params, image_size=32)
    feats = enc(torch.randn(3, 3, 32, 32))
    n = 16 + int(use_cls and has_cls)
    assert feats.tokens.shape == (3, n, 32) and enc.num_tokens == n
    assert feats.grid == (4, 4)


@pytest.mark.parametrize("part_id,n_linear", [("linear", 1), ("gelu-mlp", 2), ("fused-gelu-mlp", 3)])
def test_projectors(part_id, n_linear):
    cls = PROJECTORS.get(part_id)
    proj = cls.build(cls.Params(), vision_dim=24, llm_dim=40)
    assert proj(torch.randn(2, 5, 24)).shape == (2, 5, 40)
    assert sum(isinstance(m, torch.nn.Linear) for m in proj.modules()) == n_linear
    if part_id == "fused-gelu-mlp":  # Linear(d -> 4d) first, as in study B
        assert proj.net[0].out_features == 96


def _tiny_llm(part_id):
    cls = LLM_BACKBONES.get(part_id)
    return cls.build(cls.Params(hidden_size=32, num_layers=2, num_heads=4, init="random"), texts=TEXTS)


def test_llm_presets_differ_the_way_generations_do():
    gens = {g: _tiny_llm(f"llama{g}-tiny") for g in (1, 2, 3)}
    c = {g: m.lm.config for g, m in gens.items()}
    assert c[1].num_key_value_heads == c[1].num_attention_heads == c[2].num_key_value_heads  # MHA
    assert c[3].num_key_value_heads < c[3].num_attention_heads  # GQA
    assert c[1].max_position_embeddings < c[2].max_position_embeddings < c[3].max_position_embeddings
    theta = {g: c[g].rope_parameters["rope_theta"] for g in c}
    assert theta[1] == theta[2] == 1e4 and theta[3] == 5e5
    assert c[1].vocab_size == c[2].vocab_size < c[3].vocab_size
    assert gens[1].prompt.name == "vicuna" and gens[3].prompt.name == "llama3"
    assert gens[3].stop_token == "<|eot_id|>"
    # everything not generation-specific is shared (gen3's MLP is wider by what GQA saves: see test_lm_ladder)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads"):
        assert getattr(c[1], key) == getattr(c[2], key) == getattr(c[3], key)
    assert c[1].intermediate_size == c[2].intermediate_size < c[3].intermediate_size


@pytest.mark.parametrize("part_id", ["llama1-tiny", "llama2-tiny", "llama3-tiny"])
def test_prompt_has_one_image_placeholder_and_answer_ends_with_stop(part_id):
    llm = _tiny_llm(part_id)
    ids = llm.encode_prompt("what is the red shape?")
    assert ids.count(llm.image_token_id) == 1
    assert llm.encode_answer("circle")[-1] == llm.stop_token_id
    assert llm.decode(llm.encode_answer("circle")[:-1]) == "circle"


def test_hf_backbone_loads_a_saved_causal_lm(tmp_path):
    llm = _tiny_llm("llama3-tiny")
    llm.lm.save_pretrained(tmp_path)
    llm.tokenizer.save_pretrained(tmp_path)
    cls = LLM_BACKBONES.get("hf")
    loaded = cls.build(cls.Params(path=str(tmp_path)))
    ids = torch.tensor([llm.encode_prompt("what is the red shape?")]).clamp(max=100)
    assert torch.equal(loaded.lm(ids).logits, llm.lm.eval()(ids).logits)
    assert loaded.render_prompt("q") == llm.render_prompt("q")  # the saved chat template is used


def test_whole_model_builds_for_every_llm(tiny_raw):
    for part_id in ("llama1-tiny", "llama2-tiny", "llama3-tiny"):
        tiny_raw["model"]["llm"]["id"] = part_id
        model = build_model(config_from_dict(tiny_raw), texts=TEXTS)
        assert model.num_image_tokens == 4 and model.llm.embed_dim == 32


def test_vit_loads_a_local_pretrained_tower(tmp_path):
    cls = VISION_ENCODERS.get("vit")
    built = cls.build(cls.Params(family="clip", patch_size=8, hidden_size=32, num_layers=2, num_heads=2), image_size=32)
    built.tower.save_pretrained(tmp_path)
    loaded = cls.build(cls.Params(family="clip", path=str(tmp_path), feature_layer=-2), image_size=32)
    x = torch.randn(2, 3, 32, 32)
    expected = built.tower(pixel_values=x, output_hidden_states=True).hidden_states[-2][:, 1:]
    torch.testing.assert_close(loaded.eval()(x).tokens, expected)
    from vlmlab.errors import ConfigError, UserError

    with pytest.raises(ConfigError, match="data.image.size"):
        cls.build(cls.Params(family="clip", path=str(tmp_path)), image_size=64)
    with pytest.raises(UserError, match="config.json missing"):
        cls.build(cls.Params(family="clip", path=str(tmp_path / "nope")), image_size=32)
