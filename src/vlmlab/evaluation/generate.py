"""Batched greedy decoding with a KV cache; returns the answer tokens and their sequence probability."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from vlmlab.data.dataset import Batch
from vlmlab.models.vlm import VisionLanguageModel, position_ids_from_mask


@dataclass
class Generation:
    token_ids: list[list[int]]  # generated tokens per row, stop token excluded
    confidence: list[float]  # product of the chosen tokens' probabilities, stop token included
    stopped: list[bool]  # False if max_new_tokens ran out before the stop token


@torch.no_grad()
def greedy_generate(model: VisionLanguageModel, batch: Batch, max_new_tokens: int) -> Generation:
    """Prefill the left-padded prompts once, then decode one token per step from the cache."""
    llm = model.llm
    embeds = model.embed(batch.input_ids, batch.image_mask, batch.pixel_values)
    mask = batch.attention_mask
    positions = position_ids_from_mask(mask)
    cache = DynamicCache(config=llm.lm.config)
    image_mask = batch.image_mask
    n = embeds.shape[0]
    done = torch.zeros(n, dtype=torch.bool, device=embeds.device)
    logprob = torch.zeros(n, dtype=torch.float64, device=embeds.device)
    tokens: list[torch.Tensor] = []
    out = model.routing(llm, embeds, mask, positions, image_mask, past_key_values=cache, use_cache=True)
    for _ in range(max_new_tokens):
        logits = llm.lm_head(out.last_hidden_state[:, -1]).float()
        step_logp = torch.log_softmax(logits, dim=-1)
        next_tok = step_logp.argmax(dim=-1)
        logprob += torch.where(done, 0.0, step_logp.gather(1, next_tok[:, None]).squeeze(1).double())
        next_tok = torch.where(done, torch.full_like(next_tok, llm.pad_token_id), next_tok)
        tokens.append(next_tok)
        done |= next_tok == llm.stop_token_id
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
        image_mask = torch.zeros_like(mask[:, -1:], dtype=torch.bool)
        out = model.routing(
            llm, llm.embed_tokens(next_tok[:, None]), mask, positions, image_mask, past_key_values=cache, use_cache=True
        )
    generated = torch.stack(tokens, dim=1).tolist()
    token_ids, stopped = [], []
    for row in generated:
        if llm.stop_token_id in row:
            token_ids.append(row[: row.index(llm.stop_token_id)])
            stopped.append(True)
        else:
            token_ids.append(row)
            stopped.append(False)
    return Generation(token_ids, logprob.exp().tolist(), stopped)
