"""Boxes as location tokens: each 0-99 coordinate one token `<loc_00>` … `<loc_99>` (`model.box_tokens: true`).

vlmlab's box answers are text `[x1, y1, x2, y2]` in the processed image's 0-99 grid. Spelled in digits, a box is
about 16 tokens whose second digits are a sawtooth of the position — slow for a small LLM to learn. With location
tokens (as Pix2Seq, Kosmos-2 and PaliGemma quantize coordinates) each coordinate is one 100-way choice. The
change is the backbone's text codec only: training answers are rewritten to the tokens before tokenization, and
generated tokens are rewritten back to `[x1, y1, x2, y2]` before scoring, so every metric, record and official
evaluator sees the same text as without them. A run that generates a partial or malformed token sequence keeps it
as it is, so it counts as a format error.
"""

from __future__ import annotations

import re

import torch

GRID = 100
LOC_TOKENS = [f"<loc_{i:02d}>" for i in range(GRID)]
_BOX_TEXT = re.compile(r"\[\s*(\d{1,2})\s*,\s*(\d{1,2})\s*,\s*(\d{1,2})\s*,\s*(\d{1,2})\s*\]")
_BOX_TOKENS = re.compile(r"<loc_(\d\d)>\s*<loc_(\d\d)>\s*<loc_(\d\d)>\s*<loc_(\d\d)>")


def to_tokens(text: str) -> str:
    """Every `[x1, y1, x2, y2]` of 0-99 integers in `text` as four location tokens."""
    return _BOX_TEXT.sub(lambda m: "".join(LOC_TOKENS[int(v)] for v in m.groups()), text)


def from_tokens(text: str) -> str:
    """Every run of four location tokens in `text` back as `[x1, y1, x2, y2]` (what scoring reads)."""
    return _BOX_TOKENS.sub(lambda m: "[" + ", ".join(str(int(v)) for v in m.groups()) + "]", text)


def add_box_tokens(llm) -> None:
    """Give a `LanguageBackbone` the location tokens: added to its tokenizer if missing (a run's saved tokenizer has
    them), the LM's input and output embeddings grown to the tokenizer (new rows drawn as the LM initializes its
    weights), and its text codec switched to rewriting boxes."""
    tokenizer = llm.tokenizer
    missing = [t for t in LOC_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing)
    if llm.lm.get_input_embeddings().num_embeddings < len(tokenizer):
        with torch.no_grad():
            llm.lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    llm.text.box_tokens = True
