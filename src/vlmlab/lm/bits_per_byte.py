"""Held-out bits per byte: a tokenizer-independent LM score, so rungs with different vocabularies compare."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@torch.no_grad()
def bits_per_byte(
    lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, docs: list[str], window: int, batch_size: int = 32
) -> dict[str, float]:
    """Sum over documents of -log2 p(text tokens | <bos>, preceding tokens), divided by their UTF-8 bytes.

    Every text token is scored exactly once: a document longer than `window - 1` tokens is cut into
    consecutive windows, each starting again after `<bos>`. The end-of-document token is not scored,
    so only the text itself is paid for.
    """
    bos = tokenizer.bos_token_id
    rows: list[list[int]] = []
    for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        for start in range(0, len(ids), window - 1):
            rows.append([bos, *ids[start : start + window - 1]])
    rows.sort(key=len)  # similar lengths per batch: less padding
    nats, n_tokens = 0.0, 0
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        width = max(len(r) for r in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for j, r in enumerate(chunk):
            ids[j, : len(r)] = torch.tensor(r)
            mask[j, : len(r)] = 1
        logits = lm(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="sum")
        nats += float(nll)
        n_tokens += int((targets != -100).sum())
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    return {
        "bits_per_byte": round(nats / math.log(2) / n_bytes, 5),
        "bits_per_token": round(nats / math.log(2) / max(1, n_tokens), 4),
        "bytes_per_token": round(n_bytes / max(1, n_tokens), 4),
        "tokens": n_tokens,
        "bytes": n_bytes,
        "docs": len(docs),
    }
