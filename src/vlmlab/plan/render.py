"""A study plan as terminal tables (rich) and as JSON (every number at full precision)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from vlmlab.models.footprint import gib
from vlmlab.models.sharding import STRATEGIES
from vlmlab.plan.cost import VariantPlan, fewest_gpus
from vlmlab.plan.data import CHARS_PER_TOKEN
from vlmlab.plan.hardware import USABLE
from vlmlab.plan.pilot import PowerRow
from vlmlab.plan.study import StudyPlan, job_minutes
from vlmlab.progress import console


def flops(n: float) -> str:
    """FLOPs with an SI prefix (1.2 T, 340 G, 48 M)."""
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.3g}"


def hours(h: float) -> str:
    """Hours, or minutes or seconds when shorter."""
    if h >= 1:
        return f"{h:,.1f} h"
    return f"{h * 60:.1f} min" if h * 60 >= 1 else f"{h * 3600:.0f} s"


def _count(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def print_plan(plan: StudyPlan) -> None:
    h = plan.hardware
    console.print(
        f"[bold]Plan of {plan.name}[/bold]: {len(plan.variants)} variants x {plan.seeds} seeds = "
        f"{plan.runs} runs on {h.name} ({h.peak_flops / 1e12:,.1f} TFLOP/s peak, MFU {h.mfu:.2f}: {h.mfu_source})",
        soft_wrap=True,
        highlight=False,
    )
    stages = Table(title="per training stage of one run")
    for col in ("variant", "stage", "trained", "steps x batch", "FLOPs/sample", "memory/GPU"):
        stages.add_column(col, justify="left" if col in ("variant", "stage") else "right")
    for v in plan.variants:
        for st in v.stages:
            stages.add_row(
                v.name,
                st.name,
                _count(st.trained),
                f"{st.steps:,} x {st.global_batch}" + (f" ({st.reused})" if st.reused else ""),
                flops(st.flops.total),
                gib(st.memory.total),
            )
    console.print(stages)
    table = Table(title="per variant (a run = one seed)")
    for col in ("variant", "GPUs", "params", "prefill FLOPs", "fits", "GPU-h/run", "job time", "GPU-h"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for v in plan.variants:
        s = v.setting
        table.add_row(
            v.name,
            f"{s.processes} {s.strategy}",
            _count(sum(v.parameters.values())),
            flops(v.prefill_flops),
            "yes" if v.fits else "[red]no[/red]",
            hours(v.gpu_hours),
            _job_time(v, plan),
            hours(v.gpu_hours * v.seeds),
        )
    console.print(table)
    console.print(
        f"[bold]study total[/bold]: {plan.runs} runs, {flops(plan.flops)}FLOPs of training, "
        f"[bold]{hours(plan.gpu_hours)}[/bold] of {h.name}",
        highlight=False,
        soft_wrap=True,
    )
    largest = max(plan.variants, key=lambda v: v.peak.total)
    for v in plan.variants:
        if v is largest or not v.fits:
            console.print(f"{v.name}: memory per GPU at its peak, {v.peak.phase}: {v.peak.describe()}", highlight=False)
            n = v.setting.processes
            per = ", ".join(f"{how} {gib(_peak_under(v, how, n))}" for how in STRATEGIES)
            console.print(f"{v.name}: peak per GPU over {n} GPUs by strategy: {per}", highlight=False)
        if not v.fits:
            better = fewest_gpus(v)
            fix = f"; fits with {better[0]} over {better[1]} GPUs" if better else "; no GPU count fits it"
            console.print(
                f"[red]{v.name} does not fit[/red] {gib(v.peak.total)} > {USABLE:.0%} of {h.name}'s memory{fix}",
                highlight=False,
                soft_wrap=True,
            )
    for warning in dict.fromkeys(w for v in plan.variants for w in v.warnings):
        console.print(f"[yellow]warning[/yellow]: {warning}", highlight=False, soft_wrap=True)
    notes = list(dict.fromkeys(n for v in plan.variants for n in v.notes))
    for note in notes:
        console.print(f"assumed: {note}", highlight=False, soft_wrap=True)
    if any("lengths estimated" in st.data.how for v in plan.variants for st in v.stages):
        console.print(
            f"assumed: token lengths estimated at {CHARS_PER_TOKEN:g} characters per token (tokenizer not here)",
            highlight=False,
        )
    if plan.power:
        print_power(plan.power, plan.effect)


def _peak_under(v: VariantPlan, strategy: str, processes: int) -> int:
    """The variant's peak per process under another strategy (evaluation holds the whole model either way)."""
    return max([st.memory_under(strategy, processes).total for st in v.stages] + [v.eval_memory.total])


def _job_time(v: VariantPlan, plan: StudyPlan) -> str:
    """What each of the variant's jobs asks for (`time: auto` from this plan), and the requeues allowed."""
    asked, requeues = job_minutes(v, plan.launcher, plan.launcher.for_variant(v.name))
    return f"{asked // 60}h{asked % 60:02d} +{requeues}"


def print_power(rows: list[PowerRow], effect: float) -> None:
    """The pilot's noise per comparison, then what the planned design detects (`study --plan/--check --pilot`)."""
    if not rows:
        console.print("the pilot pairs no two levels on the same questions: no noise to plan from", highlight=False)
        return
    table = Table(
        title=f"pilot noise per comparison (paired over questions and seeds; pilot: {rows[0].noise.seeds} seeds)"
    )
    for col in ("comparison", "task", "questions", "diff", "SD paired", "seed share", "SD seed"):
        table.add_column(col)
    for r in rows:
        n = r.noise
        several = n.seeds > 1
        table.add_row(
            f"{r.factor}: {r.comparison}",
            r.task,
            f"{n.questions:,}",
            f"{n.mean:+.3f}",
            f"{n.sd_paired:.3f}",
            f"{n.seed_share:.2f}" if several else "n/a",
            f"{n.sd_seed:.3f}" if several else "n/a",
        )
    console.print(table)
    need = Table(title=f"to detect {effect:.3f} (two-sided alpha, power as given)")
    for col in ("comparison", "task", "planned q x seeds", "MDE", "detects", "questions needed", "seeds needed"):
        need.add_column(col)
    for r in rows:
        need.add_row(
            f"{r.factor}: {r.comparison}",
            r.task,
            f"{r.questions:,} x {r.seeds}",
            f"{r.mde:.3f}",
            "yes" if r.mde <= effect else "[red]no[/red]",
            "never" if r.questions_needed is None else f"{r.questions_needed:,}",
            "> 64" if r.seeds_needed is None else str(r.seeds_needed),
        )
    console.print(need)
    if any(r.noise.seeds == 1 for r in rows):
        console.print("one pilot seed: what seeds add is not estimable; computed as if they added nothing")


def plan_json(plan: StudyPlan) -> dict[str, Any]:
    h = plan.hardware
    return {
        "study": plan.name,
        "hardware": {"name": h.name, "peak_flops": h.peak_flops, "memory_bytes": h.memory_bytes, "mfu": h.mfu},
        "mfu_source": h.mfu_source,
        "runs": plan.runs,
        "train_flops": plan.flops,
        "gpu_hours": plan.gpu_hours,
        "variants": [variant_json(v, plan) for v in plan.variants],
        "power": [
            {
                "factor": r.factor,
                "comparison": r.comparison,
                "task": r.task,
                "pilot": vars(r.noise),
                "questions": r.questions,
                "seeds": r.seeds,
                "mde": r.mde,
                "questions_needed": r.questions_needed,
                "seeds_needed": r.seeds_needed,
            }
            for r in plan.power
        ],
        "effect": plan.effect,
    }


def variant_json(v: VariantPlan, plan: StudyPlan) -> dict[str, Any]:
    asked, requeues = job_minutes(v, plan.launcher, plan.launcher.for_variant(v.name))
    return {
        "name": v.name,
        "seeds": v.seeds,
        "processes": v.setting.processes,
        "strategy": v.setting.strategy,
        "parameters": v.parameters,
        "stages": [
            {
                "name": st.name,
                "trained": st.trained,
                "items": st.items,
                "steps": st.steps,
                "global_batch": st.global_batch,
                "samples": st.samples,
                "reused": st.reused,
                "flops_per_sample": st.flops.total,
                "flops_parts": st.flops.parts,
                "flops": st.total_flops,
                "mean_text_tokens": st.data.mean_text_tokens,
                "text_only": st.data.text_only,
                "data": st.data.how,
                "memory_per_gpu": st.memory.total,
                "memory_parts": st.memory.parts,
                "memory_unsharded": st.unsharded.total,
            }
            for st in v.stages
        ],
        "eval_questions": v.eval_questions,
        "eval_modes": v.eval_modes,
        "eval_flops_per_question": v.eval_flops.total,
        "eval_memory": v.eval_memory.total,
        "prefill_flops": v.prefill_flops,
        "train_flops": v.train_flops,
        "gpu_hours_per_run": v.gpu_hours,
        "wall_hours_per_run": v.wall_hours,
        "peak_memory_per_gpu": v.peak.total,
        "peak_memory_per_gpu_by_strategy": {how: _peak_under(v, how, v.setting.processes) for how in STRATEGIES},
        "fits": v.fits,
        "job_minutes": asked,
        "job_requeues": requeues,
        "notes": v.notes,
        "warnings": v.warnings,
    }
