"""`vlmlab bench routing`: full vs FastV vs DPVR on one trained run — FLOPs, latency, memory, accuracy side by side.

A benchmark, not a cached measurement: every call times again (that is what it is asked for) and writes
`routing_bench.json` into the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from vlmlab import io
from vlmlab.data.probe import probe_batch
from vlmlab.evaluation.evaluate import predict
from vlmlab.measure.cost import measure_prefill, prompt_geometry
from vlmlab.metrics import accuracy
from vlmlab.models.routing.cost import PAPER
from vlmlab.registry import ROUTING
from vlmlab.runs import RunDir, load_run_model

RATIO_COLUMNS = ("counted_prefill_gflops", "analytic_prefill_gflops", "prefill_s", "decode_token_s", "peak_mib")


def strategies(model, compared: dict[str, dict[str, Any]]) -> dict[str, torch.nn.Module]:
    """Each compared strategy built over the run's LLM, named by id and fields; the run's own strategy, when it is
    one of them and has weights of its own (DPVR's branch), is used as trained instead of a fresh copy."""
    out = {}
    own = model.routing
    for part_id, fields in compared.items():
        if getattr(own, "part_id", "") == part_id and any(True for _ in own.parameters()):
            out[" ".join([part_id, *(f"{k}={getattr(own.params, k)}" for k in fields)]) + " (trained)"] = own
            continue
        cls = ROUTING.get(part_id, key="bench routing")
        built = cls.build(cls.Params(**fields), llm=model.llm)
        fresh = " (untrained)" if any(True for _ in built.parameters()) else ""  # e.g. a DPVR branch never trained
        out[" ".join([part_id, *(f"{k}={v}" for k, v in fields.items())]) + fresh] = built
    return out


def paper_ratios() -> dict[str, Any]:
    """Analytic prefill FLOPs over full at the paper's geometry, for every registered strategy with a paper setting."""
    full = ROUTING.get("full")
    base = full.prefill_flops(full.Params(), PAPER)
    out = {}
    for part_id, cls in ROUTING.items():
        if cls.paper_params is None or part_id == "full":
            continue
        out[part_id] = {
            "params": cls.paper_params,
            "over_full": cls.prefill_flops(cls.Params(**cls.paper_params), PAPER) / base,
        }
    return {**PAPER.__dict__, "strategies": out}


def bench_routing(
    run_dir: str | Path,
    fastv_layer: int = 2,
    fastv_ratio: float = 0.5,
    dpvr_layer: int | None = None,
    n_probe: int = 64,
    eval_limit: int = 0,
    repeats: int = 5,
) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, cfg = load_run_model(run_dir, device=device)
    dpvr_layer = dpvr_layer if dpvr_layer is not None else max(1, model.llm.num_layers // 2)
    compared = {"full": {}, "fastv": {"layer": fastv_layer, "ratio": fastv_ratio}, "dpvr": {"layer": dpvr_layer}}
    batch = probe_batch(model, cfg, n_probe)
    geometry = prompt_geometry(model, batch)
    own = model.routing
    rows = []
    for name, routing in strategies(model, compared).items():
        model.routing = routing.to(device).eval()
        row = {"strategy": name, **measure_prefill(model, batch, repeats=repeats)}
        if eval_limit:
            sources = [s.model_copy(update={"limit": eval_limit}) for s in cfg.data.eval]
            records = predict(model, cfg, sources)
            row["accuracy"] = accuracy(records)
            row.update({f"acc {t}": accuracy(f) for t, f in records.groupby("task", sort=False)})
        rows.append(row)
    model.routing = own
    table = pd.DataFrame(rows)
    base = table.iloc[0]
    for col in RATIO_COLUMNS:
        table[col.replace("_gflops", "").replace("_s", "").replace("_mib", "") + "_ratio"] = (
            table[col] / base[col] if base[col] is not None else None
        )
    record = {
        "run": str(run_dir),
        "device": device,
        "probe_items": batch.input_ids.shape[0],
        "geometry": geometry.__dict__,
        "strategies": table.to_dict(orient="records"),
        "paper_geometry": paper_ratios(),
    }
    io.write_json(RunDir(run_dir).routing_bench, record)
    return record
