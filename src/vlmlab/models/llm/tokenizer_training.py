"""Offline BPE tokenizers for the tiny presets: SentencePiece-style (gen 1/2) or byte-level (gen 3)."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from vlmlab.models.llm.prompts import IMAGE_TOKEN

# Special tokens per style, in the roles transformers expects.
_SPECIALS = {
    "sentencepiece": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
    "byte-level": {
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|end_of_text|>",
        "pad_token": "<|pad|>",
    },
}
_EXTRA = {"sentencepiece": [], "byte-level": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, style: str) -> PreTrainedTokenizerFast:
    """Train a BPE tokenizer on `texts`. Deterministic for the same texts in the same order."""
    roles = _SPECIALS[style]
    specials = list(dict.fromkeys([*roles.values(), *_EXTRA[style], IMAGE_TOKEN]))
    if style == "sentencepiece":
        tok = Tokenizer(models.BPE(unk_token=roles["unk_token"]))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        alphabet: list[str] = []
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **roles)
    fast.add_special_tokens({"additional_special_tokens": [t for t in specials if t not in roles.values()]})
    return fast
