"""The LLM-backbone interface: an HF causal LM, its tokenizer and its prompt format."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from vlmlab.models.activations import Activations, transformer_layers
from vlmlab.models.llm.encoding import TextEncoder
from vlmlab.models.llm.prompts import IMAGE_TOKEN, PromptFormat


class LanguageBackbone(nn.Module):
    """Wraps an unmodified `*ForCausalLM`; routing strategies drive its decoder layers directly."""

    def __init__(self, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: PromptFormat):
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.prompt = prompt
        if IMAGE_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.chat_template = tokenizer.chat_template or prompt.chat_template
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        stop = prompt.stop_token if prompt.stop_token in tokenizer.get_vocab() else tokenizer.eos_token
        self.stop_token = stop
        self.stop_token_id = tokenizer.convert_tokens_to_ids(stop)
        self.pad_token_id = tokenizer.pad_token_id
        self.text = TextEncoder(tokenizer, prompt, self.image_token_id, self.stop_token_id)
        self.pretraining: dict | None = None  # a tiny rung's LM pretraining summary (bits per byte, tokens, ...)

    @property
    def embed_dim(self) -> int:
        return int(self.lm.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.lm.config.num_hidden_layers)

    def activations(self, tokens: int) -> Activations:
        """Activation elements per sequence of `tokens` through the decoder layers (see `models.activations`);
        the KV cache and logits are the pre-flight's to add."""
        c = self.lm.config
        gated = any(name.endswith("gate_proj") for name, _ in self.lm.named_modules())  # SwiGLU (LLaMA family)
        return transformer_layers(
            tokens,
            int(c.hidden_size),
            int(getattr(c, "intermediate_size", 4 * c.hidden_size)),
            int(c.num_attention_heads),
            int(c.num_hidden_layers),
            gated_mlp=gated,
            eager=getattr(c, "_attn_implementation", "eager") == "eager",
        )

    @property
    def kv_dim(self) -> int:
        """Width of one layer's keys (= values): fewer than hidden_size with grouped-query attention."""
        c = self.lm.config
        heads = int(c.num_attention_heads)
        kv_heads = int(getattr(c, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(c, "head_dim", None) or c.hidden_size // heads)
        return kv_heads * head_dim

    @property
    def decoder(self) -> nn.Module:
        """The base model (embeddings, decoder layers, final norm) under the LM head."""
        return self.lm.get_decoder()

    @property
    def lm_head(self) -> nn.Module:
        return self.lm.get_output_embeddings()

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(input_ids)

    def render_prompt(self, question: str, image: bool = True, image_at_end: bool = False) -> str:
        """The prompt text up to where the answer starts (contains one `<image>` unless `image` is False)."""
        return self.text.render_prompt(question, image, image_at_end)

    def encode_prompt(self, question: str, image: bool = True, image_at_end: bool = False) -> list[int]:
        return self.text.encode_prompt(question, image, image_at_end)

    def encode_answer(self, answer: str) -> list[int]:
        """Answer tokens followed by the stop token (these are the supervised positions)."""
        return self.text.encode_answer(answer)

    def encode_conversation(self, turns, image: bool = True, image_at_end: bool = False):
        """(ids, labels) of a whole training conversation (see `TextEncoder.encode_conversation`)."""
        return self.text.encode_conversation(turns, image, image_at_end)

    def decode(self, ids: list[int]) -> str:
        return self.text.decode(ids)

    def save_tokenizer(self, directory: str | Path) -> None:
        self.tokenizer.save_pretrained(str(directory))


@contextmanager
def eager_attention(lm: PreTrainedModel) -> Iterator[None]:
    """Eager attention (which can return its weights, and whose products FLOP counters see) for the duration of
    a probe only; the model's own implementation (e.g. sdpa) is restored after it."""
    config = lm.config
    previous = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = previous
