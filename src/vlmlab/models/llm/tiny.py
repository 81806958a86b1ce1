"""Tiny LLaMA-1/2/3-style presets that differ the way the real generations do (research.md §A)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from pydantic import Field
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from vlmlab.errors import ConfigError, UserError
from vlmlab.models.llm.base import LanguageBackbone
from vlmlab.models.llm.prompts import FORMATS
from vlmlab.models.llm.tokenizer_training import train_bpe_tokenizer
from vlmlab.registry import PartParams, register_llm

class TinyParams(PartParams):
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int | None = Field(None, ge=1)  # None = LLaMA's 8/3 * hidden, rounded to 8
    tokenizer_path: str | None = None  # None = train a BPE tokenizer on the training texts


class TinyLlama(LanguageBackbone):
    """A randomly initialised tiny LLaMA of one generation with its own offline tokenizer."""

    Params = TinyParams
    preset: dict

    @classmethod
    def build(cls, params: TinyParams, *, tokenizer_dir: str | Path | None = None, texts: Iterable[str] | None = None):
        preset = cls.preset
        if params.hidden_size % params.num_heads:
            raise ConfigError("model.llm.num_heads", f"{params.num_heads} does not divide hidden_size {params.hidden_size}")
        kv_heads = max(1, params.num_heads // preset["kv_ratio"])
        if params.num_heads % kv_heads:
            raise ConfigError("model.llm.num_heads", f"{params.num_heads} heads cannot be grouped into {kv_heads} KV heads")
        tokenizer = _load_or_train_tokenizer(params, preset, tokenizer_dir, texts)
        inter = params.intermediate_size or 8 * ((8 * params.hidden_size // 3 + 7) // 8)
        config = LlamaConfig(
            vocab_size=max(preset["vocab"], len(tokenizer)),
            hidden_size=params.hidden_size,
            intermediate_size=inter,
            num_hidden_layers=params.num_layers,
            num_attention_heads=params.num_heads,
            num_key_value_heads=kv_heads,
            max_position_embeddings=preset["context"],
            rope_theta=preset["rope_theta"],
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
        )
        config._attn_implementation = "sdpa"
        return cls(LlamaForCausalLM(config), tokenizer, FORMATS[preset["prompt"]])


def _load_or_train_tokenizer(params, preset, tokenizer_dir, texts) -> PreTrainedTokenizerFast:
    source = params.tokenizer_path or tokenizer_dir
    if source is not None:
        path = Path(source)
        if not (path / "tokenizer.json").is_file():
            raise UserError(f"{path}: tokenizer.json not found [model.llm.tokenizer_path]")
        return PreTrainedTokenizerFast.from_pretrained(str(path))
    if texts is None:
        raise UserError("model.llm: a tiny preset needs training texts or a tokenizer_path to build its tokenizer")
    return train_bpe_tokenizer(texts, preset["vocab"], preset["style"])


# What changes between generations (everything else comes from the shared Params above):
#   gen1: MHA, short context, RoPE θ 1e4, smallest SentencePiece-style vocab, vicuna-style template
#   gen2: as gen1 with twice the context (its larger pretraining budget arrives with the LM ladder)
#   gen3: GQA, 4x context, RoPE θ 5e5, 4x larger byte-level BPE vocab, its own chat template


@register_llm("llama1-tiny")
class Llama1Tiny(TinyLlama):
    """LLaMA-1 style: multi-head attention, 256 positions, RoPE θ 1e4, 512-token SentencePiece-style BPE."""

    preset = dict(kv_ratio=1, context=256, rope_theta=1e4, vocab=512, style="sentencepiece", prompt="vicuna")


@register_llm("llama2-tiny")
class Llama2Tiny(TinyLlama):
    """LLaMA-2 style: as LLaMA-1 with twice the context (512 positions)."""

    preset = dict(kv_ratio=1, context=512, rope_theta=1e4, vocab=512, style="sentencepiece", prompt="vicuna")


@register_llm("llama3-tiny")
class Llama3Tiny(TinyLlama):
    """LLaMA-3 style: GQA (4 query heads per KV head), 1024 positions, RoPE θ 5e5, 2048-token byte-level BPE."""

    preset = dict(kv_ratio=4, context=1024, rope_theta=5e5, vocab=2048, style="byte-level", prompt="llama3")
