"""`vlmlab bench routing`: full vs FastV vs DPVR on one trained run — FLOPs, latency, memory, accuracy side by side."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from vlmlab.evaluation.efficiency import PAPER, analytic_prefill_flops, measure_prefill, prompt_geometry
from vlmlab.registry import ROUTING


def strategies(model, fastv_layer: int, fastv_ratio: float, dpvr_layer: int) -> dict[str, torch.nn.Module]:
    """The run's own routing plus FastV (training-free) and DPVR (its branch as trained, or a fresh copy)."""
    full = ROUTING.get("full")
    out = {"full": full.build(full.Params(), llm=model.llm)}
    fastv = ROUTING.get("fastv")
    out[f"fastv K={fastv_layer} R={fastv_ratio}"] = fastv.build(
        fastv.Params(layer=fastv_layer, ratio=fastv_ratio), llm=model.llm
    )
    own = model.routing
    if getattr(own, "part_id", "") == "dpvr":
        out[f"dpvr k={own.params.layer} (trained)"] = own
    else:
        dpvr = ROUTING.get("dpvr")
        out[f"dpvr k={dpvr_layer} (untrained branch)"] = dpvr.build(dpvr.Params(layer=dpvr_layer), llm=model.llm)
    return out


def bench_routing(
    run_dir: str | Path,
    fastv_layer: int = 2,
    fastv_ratio: float = 0.5,
    dpvr_layer: int | None = None,
    n_probe: int = 64,
    eval_limit: int = 0,
    repeats: int = 5,
) -> dict:
    from vlmlab.data.probe import probe_batch
    from vlmlab.evaluation.evaluate import predict
    from vlmlab.io import write_json
    from vlmlab.runs import load_run_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, cfg = load_run_model(run_dir, device=device)
    n_layers = model.llm.num_layers
    dpvr_layer = dpvr_layer if dpvr_layer is not None else max(1, n_layers // 2)
    batch = probe_batch(model, cfg, n_probe)
    geometry = prompt_geometry(model, batch)
    own = model.routing
    rows = []
    for name, routing in strategies(model, fastv_layer, fastv_ratio, dpvr_layer).items():
        model.routing = routing.to(device).eval()
        row = {"strategy": name, **measure_prefill(model, batch, repeats=repeats)}
        if eval_limit:
            sources = [s.model_copy(update={"limit": eval_limit}) for s in cfg.data.eval]
            records = predict(model, cfg, sources)
            row["accuracy"] = float(records["correct"].mean())
            row.update({f"acc {t}": float(f["correct"].mean()) for t, f in records.groupby("task", sort=False)})
        rows.append(row)
    model.routing = own
    table = pd.DataFrame(rows)
    base = table.iloc[0]
    for col in ("counted_prefill_gflops", "analytic_prefill_gflops", "prefill_s", "decode_token_s", "peak_mib"):
        table[col.replace("_gflops", "").replace("_s", "").replace("_mib", "") + "_ratio"] = (
            table[col] / base[col] if base[col] is not None else None
        )
    paper_k = 18
    record = {
        "run": str(run_dir),
        "device": device,
        "probe_items": batch.input_ids.shape[0],
        "geometry": geometry.__dict__,
        "strategies": table.to_dict(orient="records"),
        "paper_geometry": {
            **PAPER.__dict__,
            "dpvr_layer": paper_k,
            "dpvr_over_full": analytic_prefill_flops(PAPER, "dpvr", paper_k) / analytic_prefill_flops(PAPER, "full"),
            "fastv_K2_R0.5_over_full": analytic_prefill_flops(PAPER, "fastv", 2, 0.5)
            / analytic_prefill_flops(PAPER, "full"),
        },
    }
    write_json(Path(run_dir) / "routing_bench.json", record)
    return record
