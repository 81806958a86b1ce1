"""What a routing strategy costs: prefill FLOPs (counted and analytic), prefill / decode latency, peak memory."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import DynamicCache

from vlmlab.models.vlm import position_ids_from_mask


@dataclass(frozen=True)
class Geometry:
    """A decoder's shape and one prompt's token counts (LLaVA-1.5-7B: 32 layers, 4096 wide, 11008 MLP, 576 + ~60)."""

    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    vision: int
    text: int

    @classmethod
    def of(cls, llm, vision: int, text: int) -> Geometry:
        c = llm.lm.config
        return cls(
            c.num_hidden_layers,
            c.hidden_size,
            c.intermediate_size,
            c.num_attention_heads,
            c.num_key_value_heads,
            vision,
            text,
        )


PAPER = Geometry(layers=32, hidden=4096, ffn=11008, heads=32, kv_heads=32, vision=576, text=60)


def layer_flops(g: Geometry, queries: int, keys: int) -> float:
    """One decoder layer for `queries` tokens attending over `keys`: 2 FLOPs per multiply-add.

    Projections: q, o (d×d), k, v (d×d·kv/heads), MLP 3 × d×ffn; attention: QKᵀ and AV, each
    queries × keys × d (no causal discount: the kernels compute the full block, as FlopCounterMode counts).
    """
    d = g.hidden
    proj = 2 * d * d + 2 * d * d * g.kv_heads // g.heads + 3 * d * g.ffn
    return 2.0 * queries * proj + 2.0 * 2 * queries * keys * d


def analytic_prefill_flops(
    g: Geometry, routing: str, layer: int | None = None, ratio: float = 0.0, rank_by: str = "last-token"
) -> float:
    """Prefill FLOPs of the decoder layers (no LM head) under `full`, `fastv` (layer K, ratio R, ranked by the last
    token or all tokens) or `dpvr` (layer k)."""
    n = g.vision + g.text
    if routing == "full":
        return g.layers * layer_flops(g, n, n)
    if routing == "fastv":
        kept = n - int(ratio * g.vision)
        d = g.hidden
        queries = n if rank_by == "all-tokens" else 1  # q projections, all k, scores of those queries over n keys
        ranking = 2.0 * (queries * d * d + n * d * d * g.kv_heads // g.heads + queries * n * d) if ratio > 0 else 0.0
        return layer * layer_flops(g, n, n) + ranking + (g.layers - layer) * layer_flops(g, kept, kept)
    if routing == "dpvr":
        return (
            layer * layer_flops(g, n, n)
            + layer_flops(g, g.vision, g.vision)  # shared layers + branch
            + (g.layers - 1 - layer) * layer_flops(g, g.text, g.text)
            + layer_flops(g, n, n)
        )  # text-only + fused
    raise ValueError(f"unknown routing {routing!r}")


def counted_prefill_flops(model, batch) -> int:
    """FLOPs torch counts for one prefill of the routed decoder (vision tower and projector excluded).

    Counted with eager attention: FlopCounterMode does not count the CPU SDPA kernel, but it does count
    eager attention's two matmuls, which compute the same products.
    """
    from vlmlab.analysis.attention import eager_attention

    embeds = model.embed(batch.input_ids, batch.image_mask, batch.pixel_values)
    with torch.no_grad(), eager_attention(model.llm.lm), FlopCounterMode(display=False) as counter:
        model.routing(
            model.llm, embeds, batch.attention_mask, position_ids_from_mask(batch.attention_mask), batch.image_mask
        )
    return int(counter.get_total_flops())


def sync_device(device: torch.device) -> None:
    """Wait for queued CUDA work before reading a clock (nothing to wait for on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def latency(model, batch, decode_tokens: int = 8, repeats: int = 5) -> dict[str, float]:
    """Median seconds of one prefill (routed decoder over the prompt) and of one decode step with the KV cache."""
    device = batch.input_ids.device
    embeds = model.embed(batch.input_ids, batch.image_mask, batch.pixel_values)
    llm = model.llm
    prefill, decode = [], []
    for _ in range(repeats):
        cache = DynamicCache(config=llm.lm.config)
        mask = batch.attention_mask
        positions = position_ids_from_mask(mask)
        sync_device(device)
        t0 = time.perf_counter()
        out = model.routing(llm, embeds, mask, positions, batch.image_mask, past_key_values=cache, use_cache=True)
        sync_device(device)
        prefill.append(time.perf_counter() - t0)
        token = llm.lm_head(out.last_hidden_state[:, -1]).argmax(-1)
        steps = []
        for _ in range(decode_tokens):
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = positions[:, -1:] + 1
            no_image = torch.zeros_like(mask[:, -1:], dtype=torch.bool)
            sync_device(device)
            t0 = time.perf_counter()
            out = model.routing(
                llm, llm.embed_tokens(token[:, None]), mask, positions, no_image, past_key_values=cache, use_cache=True
            )
            token = llm.lm_head(out.last_hidden_state[:, -1]).argmax(-1)
            sync_device(device)
            steps.append(time.perf_counter() - t0)
        decode.append(statistics.median(steps))
    return {"prefill_s": statistics.median(prefill), "decode_token_s": statistics.median(decode)}


@torch.no_grad()
def peak_memory_mib(model, batch) -> float | None:
    """Peak CUDA memory of one prefill above what was allocated before it (None on CPU: not measured)."""
    device = batch.input_ids.device
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    embeds = model.embed(batch.input_ids, batch.image_mask, batch.pixel_values)
    model.routing(
        model.llm, embeds, batch.attention_mask, position_ids_from_mask(batch.attention_mask), batch.image_mask
    )
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def prompt_geometry(model, batch) -> Geometry:
    """The model's decoder shape with this batch's vision tokens and mean real text tokens per prompt."""
    n_image = model.num_image_tokens
    text = round(float((batch.attention_mask.sum(1) - n_image).float().mean()))
    return Geometry.of(model.llm, vision=n_image, text=text)


def routing_analytic_flops(routing, g: Geometry) -> float:
    """Analytic prefill FLOPs of one prompt under the strategy module `routing` (its id, layer and ratio)."""
    p = routing.params
    return analytic_prefill_flops(
        g, routing.part_id, getattr(p, "layer", None), getattr(p, "ratio", 0.0), getattr(p, "rank_by", "last-token")
    )


def measure_prefill(model, batch, repeats: int = 5, decode_tokens: int = 8) -> dict[str, float | None]:
    """The cost of the model's current routing on one batch: counted and analytic prefill GFLOPs (whole batch),
    prefill and decode-step latency, CUDA peak memory."""
    n = batch.input_ids.shape[0]
    return {
        "counted_prefill_gflops": counted_prefill_flops(model, batch) / 1e9,
        "analytic_prefill_gflops": routing_analytic_flops(model.routing, prompt_geometry(model, batch)) * n / 1e9,
        **latency(model, batch, decode_tokens=decode_tokens, repeats=repeats),
        "peak_mib": peak_memory_mib(model, batch),
    }
