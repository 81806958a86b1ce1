"""What a model's routing costs: prefill FLOPs (counted and analytic), prefill / decode latency, peak memory."""

from __future__ import annotations

import statistics
import time

import torch
from pydantic import Field
from torch.utils.flop_counter import FlopCounterMode
from transformers import DynamicCache

from vlmlab import io
from vlmlab.data.probe import probe_batch
from vlmlab.measure.base import Measurement
from vlmlab.models.llm.base import eager_attention
from vlmlab.models.routing.cost import Geometry
from vlmlab.models.vlm import position_ids_from_mask
from vlmlab.registry import PartParams


def counted_prefill_flops(model, batch) -> int:
    """FLOPs torch counts for one prefill of the routed decoder (vision tower and projector excluded).

    Counted with eager attention: FlopCounterMode does not count the CPU SDPA kernel, but it does count
    eager attention's two matmuls, which compute the same products.
    """
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


def analytic_prefill_flops(routing, g: Geometry) -> float:
    """Analytic prefill FLOPs of one prompt of shape `g` under the strategy module `routing` (its own formula)."""
    return type(routing).prefill_flops(routing.params, g)


def measure_prefill(model, batch, repeats: int = 5, decode_tokens: int = 8) -> dict[str, float | None]:
    """The cost of the model's current routing on one batch: counted and analytic prefill GFLOPs (whole batch),
    prefill and decode-step latency, CUDA peak memory."""
    n = batch.input_ids.shape[0]
    return {
        "counted_prefill_gflops": counted_prefill_flops(model, batch) / 1e9,
        "analytic_prefill_gflops": analytic_prefill_flops(model.routing, prompt_geometry(model, batch)) * n / 1e9,
        **latency(model, batch, decode_tokens=decode_tokens, repeats=repeats),
        "peak_mib": peak_memory_mib(model, batch),
    }


class PrefillCost(Measurement):
    """The run's own routing on its probe prompts (one batch): GFLOPs per prompt, counted and analytic, median
    prefill and decode-step seconds, CUDA peak memory. Timed once and stored: a report that shows these
    numbers shows the same ones every time it is rendered."""

    kind = "prefill-cost"
    title = "prefill cost"

    class Params(PartParams):
        n_probe: int = Field(64, ge=1)  # prompts in the measured batch
        repeats: int = Field(3, ge=1)
        decode_tokens: int = Field(4, ge=1)

    def measure(self, model, cfg, bar) -> None:
        p = self.params
        batch = probe_batch(model, cfg, p.n_probe)
        n = batch.input_ids.shape[0]
        job = bar.add_task("prefill cost", total=1, info=str(self.run.path.name))
        cost = measure_prefill(model, batch, repeats=p.repeats, decode_tokens=p.decode_tokens)
        bar.advance(job)
        io.write_json(
            self.path,
            {
                "run": str(self.run.path),
                "routing": cfg.model.routing.id,
                "prompts": n,
                "device": str(batch.input_ids.device),
                "prefill_gflops_per_prompt": cost["counted_prefill_gflops"] / n,
                "analytic_gflops_per_prompt": cost["analytic_prefill_gflops"] / n,
                "prefill_s": cost["prefill_s"],
                "decode_token_s": cost["decode_token_s"],
                "peak_mib": cost["peak_mib"],
            },
        )
