"""The tiny LLaMA-1/2/3 ladder: rungs that differ the way the real generations do, pretrained offline.

The differences follow the LLaMA generations that study A swaps ("Back to the Barn with LLAMAs: Evolving
Pretrained LLM Backbones in Finetuning VLMs", arXiv 2604.10985)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from vlmlab.errors import ConfigError, UserError
from vlmlab.lm.pretrain import ensure_backbone, load_backbone_lm
from vlmlab.lm.recipe import PretrainRecipe
from vlmlab.models.llm.base import LanguageBackbone
from vlmlab.models.llm.prompts import FORMATS
from vlmlab.models.llm.tokenizer_training import train_bpe_tokenizer
from vlmlab.models.memory import build_if_it_fits
from vlmlab.registry import PartParams, register_llm


class TinyParams(PartParams):
    """Size knobs (held constant in a study) + the fields that make a generation (they travel with the id)."""

    identity_fields: ClassVar[tuple[str, ...]] = (
        "context",
        "rope_theta",
        "queries_per_kv",
        "vocab_size",
        "tokenizer",
        "template",
        "pretrain",
    )
    # size: set these per study, the same for every rung
    hidden_size: int = Field(128, ge=8, le=16384)
    num_layers: int = Field(4, ge=1, le=256)
    num_heads: int = Field(4, ge=1, le=256)
    intermediate_size: int | None = Field(
        None, ge=1, le=65536
    )  # None: LLaMA's 8/3 x hidden (+ what GQA saves), rounded to 8
    # `pretrained`: the rung's LM pretraining (cached); `random`: random init + a tokenizer fit to the VQA texts
    init: Literal["pretrained", "random"] = "pretrained"
    tokenizer_path: str | None = None  # init random only: use this tokenizer instead of fitting one
    # the generation (defaults per rung below)
    context: int = Field(256, ge=8, le=131072)
    rope_theta: float = Field(1e4, gt=0)
    queries_per_kv: int = Field(1, ge=1, le=64)  # 1 = multi-head attention; >1 = grouped-query attention
    vocab_size: int = Field(512, ge=64, le=262144)
    tokenizer: Literal["sentencepiece", "byte-level"] = "sentencepiece"
    # the chat template; `native` = the rung's own (vicuna for gen1/2, llama3 for gen3). A study holds it fixed
    # across rungs by setting one (e.g. vicuna) for all, or compares native and matched as a factor.
    template: Literal["native", "vicuna", "llava-v1", "llama3"] = "vicuna"
    pretrain: PretrainRecipe = PretrainRecipe()

    @field_validator("pretrain", mode="before")
    @classmethod
    def _over_rung_recipe(cls, value: Any) -> Any:
        """A partial recipe (`pretrain.tokens=...`) overrides this rung's recipe, not the generic defaults."""
        if isinstance(value, dict):
            return {**cls.model_fields["pretrain"].default.model_dump(), **value}
        return value

    def architecture(self) -> dict[str, Any]:
        """Everything that decides the LM's shape and tokenizer (the recipe is hashed separately)."""
        return self.model_dump(mode="json", exclude={"init", "tokenizer_path", "pretrain", "template"})

    def prompt_format(self):
        """The chat template this rung prompts with (`native` resolved to the rung's own default)."""
        name = type(self).model_fields["template"].default if self.template == "native" else self.template
        return FORMATS[name]

    def ffn_size(self) -> int:
        if self.intermediate_size is not None:
            return self.intermediate_size
        # LLaMA's rule, plus the attention weights GQA saves moved into the MLP (as LLaMA-3 8B did vs LLaMA-2 7B),
        # so the rungs keep the same non-embedding parameter count.
        llama = 8 * -(-(8 * self.hidden_size // 3) // 8)
        saved = 2 * self.hidden_size * self.hidden_size * (1 - 1 / self.queries_per_kv)  # fewer K/V weights
        return llama + 8 * round(saved / (3 * self.hidden_size) / 8)  # the MLP has 3 x hidden weights per unit


class TinyLlama(LanguageBackbone):
    """A tiny LLaMA of one generation; `init: pretrained` loads (or first builds) its cached pretrained rung."""

    Params = TinyParams

    @classmethod
    def build(
        cls,
        params: TinyParams,
        *,
        tokenizer_dir: str | Path | None = None,
        texts: Iterable[str] | None = None,
        pretrained_weights: bool = True,
    ):
        _check_heads(params)
        if params.init == "pretrained":
            return cls._pretrained(params, tokenizer_dir, pretrained_weights)
        tokenizer = _random_init_tokenizer(params, tokenizer_dir, texts)
        return cls(_new_lm(params, tokenizer), tokenizer, params.prompt_format())

    @classmethod
    def _pretrained(cls, params: TinyParams, tokenizer_dir, pretrained_weights: bool):
        if not pretrained_weights and tokenizer_dir is not None:
            # weights come from a run's checkpoint next: only the shape is needed, not the cached rung
            tokenizer = _load_tokenizer(Path(tokenizer_dir), "tokenizer")
            return cls(_new_lm(params, tokenizer), tokenizer, params.prompt_format())
        backbone = cls.pretrained_backbone(params)

        tokenizer = _load_tokenizer(backbone.path, "backbone cache")
        llm = cls(load_backbone_lm(backbone.path).train(), tokenizer, params.prompt_format())
        llm.pretraining = summary(backbone.record)
        return llm

    @classmethod
    def pretrained_backbone(cls, params: TinyParams):
        """This rung's cached pretrained backbone (`vlmlab.lm.pretrain.Backbone`), built first if missing."""

        _check_heads(params)
        return ensure_backbone(
            cls.part_id,
            params.architecture(),
            params.pretrain,
            train_tokenizer=lambda docs: train_bpe_tokenizer(docs, params.vocab_size, params.tokenizer),
            make_lm=lambda tok: _new_lm(params, tok),
        )


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """What a run keeps of its rung's pretraining record (the full record stays in the backbone cache)."""
    return {
        "backbone": record["backbone"],
        "heldout_bits_per_byte": record["heldout"]["bits_per_byte"],
        "tokens_seen": record["tokens_seen"],
        "epochs": record["epochs"],
        "corpus": record["corpus"]["version"],
        "parameters": record["parameters"],
        "seconds": record["seconds"],
    }


def _new_lm(params: TinyParams, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    return build_if_it_fits(lambda: LlamaForCausalLM(llama_config(params, tokenizer)), "model.llm")


def llama_config(params: TinyParams, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    config = LlamaConfig(
        vocab_size=max(params.vocab_size, len(tokenizer)),
        hidden_size=params.hidden_size,
        intermediate_size=params.ffn_size(),
        num_hidden_layers=params.num_layers,
        num_attention_heads=params.num_heads,
        num_key_value_heads=params.num_heads // params.queries_per_kv,
        max_position_embeddings=params.context,
        rope_theta=params.rope_theta,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    return config


def _check_heads(params: TinyParams) -> None:
    if params.hidden_size % params.num_heads:
        raise ConfigError("model.llm.num_heads", f"{params.num_heads} does not divide hidden_size {params.hidden_size}")
    if params.num_heads % params.queries_per_kv:
        raise ConfigError(
            "model.llm.num_heads", f"{params.num_heads} heads cannot be grouped {params.queries_per_kv} per KV head"
        )


def _load_tokenizer(path: Path, what: str) -> PreTrainedTokenizerFast:
    if not (path / "tokenizer.json").is_file():
        raise UserError(f"{path}: tokenizer.json not found ({what})")
    return PreTrainedTokenizerFast.from_pretrained(str(path))


def _random_init_tokenizer(params: TinyParams, tokenizer_dir, texts) -> PreTrainedTokenizerFast:
    source = params.tokenizer_path or tokenizer_dir
    if source is not None:
        return _load_tokenizer(Path(source), "model.llm.tokenizer_path")
    if texts is None:
        raise UserError("model.llm: init random needs training texts or a tokenizer_path to build its tokenizer")
    return train_bpe_tokenizer(texts, params.vocab_size, params.tokenizer)


# The ladder. Same size knobs; per rung, what changed between the real generations:
#   gen1: MHA, 256 positions, RoPE θ 1e4, 512-token SentencePiece-style BPE, vicuna template, 0.75M tokens
#   gen2: as gen1 with twice the context and twice the pretraining tokens
#   gen3: GQA (4 queries per KV head), 1024 positions, RoPE θ 5e5, 4x vocabulary (byte-level BPE),
#         its own chat template, 4x gen1's tokens (packed at 256 like gen2: the corpus' documents are short,
#         so longer packing would only cost time)


@register_llm("llama1-tiny")
class Llama1Tiny(TinyLlama):
    """LLaMA-1 style: MHA, 256 positions, RoPE θ 1e4, 512-token BPE; pretrained on 0.75M tokens at length 128."""

    class Params(TinyParams):
        pretrain: PretrainRecipe = PretrainRecipe(tokens=750_000, seq_len=128, batch_size=16)


@register_llm("llama2-tiny")
class Llama2Tiny(TinyLlama):
    """LLaMA-2 style: as LLaMA-1 with 512 positions; pretrained on 1.5M tokens at length 256."""

    class Params(TinyParams):
        context: int = Field(512, ge=8, le=131072)
        pretrain: PretrainRecipe = PretrainRecipe(tokens=1_500_000, seq_len=256, batch_size=8)


@register_llm("llama3-tiny")
class Llama3Tiny(TinyLlama):
    """LLaMA-3 style: GQA, 1024 positions, RoPE θ 5e5, 2048-token byte-level BPE; 3M tokens at length 256."""

    class Params(TinyParams):
        context: int = Field(1024, ge=8, le=131072)
        rope_theta: float = Field(5e5, gt=0)
        queries_per_kv: int = Field(4, ge=1, le=64)
        vocab_size: int = Field(2048, ge=64, le=262144)
        tokenizer: Literal["sentencepiece", "byte-level"] = "byte-level"
        template: Literal["native", "vicuna", "llama3"] = "llama3"
        pretrain: PretrainRecipe = PretrainRecipe(tokens=3_000_000, seq_len=256, batch_size=8)
