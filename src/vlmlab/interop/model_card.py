"""The model card (`README.md`) written with every export: what a published checkpoint is, how it was made, and
what it scores — read from the run's own files (config, train.json, environment.json, metrics*.json, done.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from vlmlab import io
from vlmlab.config import read_yaml
from vlmlab.runs import RunDir

PART_FIELDS = {  # the fields a reader wants first, per part (the rest are in the resolved config below)
    "vision": ("family", "path", "patch_size", "hidden_size", "num_layers", "feature_layer"),
    "projector": ("norm",),
    "llm": ("path", "template", "hidden_size", "num_layers", "num_heads", "vocab_size", "init"),
    "routing": ("layer", "ratio", "threshold"),
}


def model_card(run_dir: str | Path, export_format: str = "hf-llava") -> str:
    """The card's Markdown (with the Hugging Face metadata block on top)."""
    run = RunDir(run_dir)
    cfg = read_yaml(run.config)
    train = _json(run.train_info)
    env = _json(run.environment)
    done = _json(run.done)
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: image-text-to-text",
        "tags: [vlmlab, llava]",
        "---",
        "",
        f"# {cfg.get('name', run.path.name)}",
        "",
        f"A vision-language model trained with vlmlab and exported with `vlmlab export "
        f"--format {export_format}` (a `LlavaForConditionalGeneration` checkpoint with its tokenizer, chat template "
        "and processor). Everything below is read from the run directory it was exported from.",
        "",
        *_parts(cfg),
        *_training(cfg, train, env),
        *_evaluation(run, cfg),
        *_provenance(cfg, env, done),
        "## How to load",
        "",
        "```python",
        "from transformers import AutoProcessor, LlavaForConditionalGeneration",
        "",
        'model = LlavaForConditionalGeneration.from_pretrained("path/to/this/directory")',
        'processor = AutoProcessor.from_pretrained("path/to/this/directory")',
        "```",
        "",
        "## Resolved config",
        "",
        "The run's `config.yaml`: every part's fields with their defaults filled in.",
        "",
        "```yaml",
        yaml.safe_dump(cfg, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_model_card(run_dir: str | Path, out_dir: Path, export_format: str = "hf-llava") -> Path:
    target = Path(out_dir) / "README.md"
    io.write_text(target, model_card(run_dir, export_format))
    return target


def _json(path: Path) -> dict[str, Any]:
    return io.read_json(path) if path.is_file() else {}


def _parts(cfg: dict) -> list[str]:
    rows = ["## Parts", "", "| part | id | settings |", "|---|---|---|"]
    for part, fields in PART_FIELDS.items():
        spec = cfg.get("model", {}).get(part) or {}
        settings = ", ".join(f"{k} {_v(spec[k])}" for k in fields if spec.get(k) is not None)
        rows.append(f"| {part} | `{spec.get('id', '?')}` | {settings} |")
    image = cfg.get("data", {}).get("image", {})
    rows += [
        "",
        f"Images: {image.get('size')} px, `{image.get('geometry')}`, mean {image.get('mean')}, std {image.get('std')}; "
        f"the image comes {image.get('position', 'before')} the question in the prompt.",
        "",
    ]
    return rows


def _sources(sources: Any) -> str:
    sources = sources if isinstance(sources, list) else [sources]
    out = []
    for s in sources:
        if not isinstance(s, dict):
            continue
        text = f"`{s.get('task')}:{s.get('split')}`"
        extras = [f"{k} {_v(s[k])}" for k in ("path", "limit", "prompts") if s.get(k) is not None]
        if s.get("repeat", 1) != 1:
            extras.append(f"repeat {s['repeat']}")
        out.append(text + (f" ({', '.join(extras)})" if extras else ""))
    return ", ".join(out) or "none"


def _training(cfg: dict, train: dict, env: dict) -> list[str]:
    t = cfg.get("train", {})
    rows = [
        "## Training",
        "",
        f"- Seed: {cfg.get('seed')} (fixes initialization and data order).",
        f"- Training data: {_sources(cfg.get('data', {}).get('train'))}.",
        f"- Batch size {t.get('batch_size')} per process × grad accumulation {t.get('grad_accum')}; "
        f"{t.get('schedule')} schedule, warmup {t.get('warmup_ratio')}, weight decay {t.get('weight_decay')}, "
        f"max grad norm {t.get('max_grad_norm')}, mixed precision {t.get('mixed_precision')}.",
        "",
        "| stage | epochs | max steps | learning rates (0 = frozen) | LoRA | data |",
        "|---|---|---|---|---|---|",
    ]
    for st in t.get("stages", []):
        lrs = ", ".join(f"{k} {v:g}" for k, v in (st.get("lr") or {}).items() if v)
        lora = f"r {st['lora'].get('r')}" if st.get("lora") else "-"
        data = _sources(st["data"]) if st.get("data") else "as above"
        rows.append(f"| {st.get('name')} | {st.get('epochs')} | {_v(st.get('max_steps'))} | {lrs} | {lora} | {data} |")
    rows.append("")
    if train:
        rows.append(
            f"- {train.get('steps')} optimizer steps in {_seconds(train.get('seconds'))} "
            f"({train.get('samples_per_s', 0):.1f} samples/s); parameters: "
            + ", ".join(f"{k} {v:,}" for k, v in (train.get("parameters") or {}).items())
            + "."
        )
        vp = train.get("vision_pretrain") or {}
        if vp:
            rows.append(
                f"- Vision pretraining: {'cached (shared)' if vp.get('cached') else _seconds(vp.get('seconds'))}."
            )
        lm = train.get("llm_pretraining") or {}
        if lm:
            rows.append(
                f"- LLM pretraining: {lm.get('tokens_seen', 0):,} tokens, held-out bits per byte "
                f"{lm.get('heldout_bits_per_byte')}."
            )
    else:
        rows.append("- The run has no train.json (imported or not trained by vlmlab): no training record.")
    machine = env.get("trained_on") or {}
    if machine:
        gpu = f"{machine.get('gpu_count')} × {machine.get('gpu')}" if machine.get("gpu") else "no GPU"
        rows.append(f"- Machine: {machine.get('cpu_count')} CPUs, {gpu}; Python {machine.get('python')}.")
    for change in env.get("recipe_changes", []):
        changes = "; ".join(
            f"{k}: {json.dumps(a)} → {json.dumps(b)}" for k, (a, b) in change.get("changes", {}).items()
        )
        rows.append(f"- **Resumed with a changed recipe** from {change.get('resumed_from') or 'the start'}: {changes}.")
    rows.append("")
    return rows


def _evaluation(run: RunDir, cfg: dict) -> list[str]:
    rows = ["## Evaluation", "", f"Evaluation data: {_sources(cfg.get('data', {}).get('eval'))}.", ""]
    files = sorted(run.path.glob("metrics*.json"))
    if not files:
        return rows + ["The run has not been evaluated (`vlmlab eval` writes metrics.json).", ""]
    rows += [
        "Accuracy is the task's own metric averaged over items (n = items scored); `correct` answers are full "
        "credit. Mode: `clean` = the real image, `blind` = a constant image, others = perturbed images.",
        "",
        "| mode | task | metric | accuracy | n |",
        "|---|---|---|---|---|",
    ]
    details, gaps = [], {}
    for file in files:
        mode = file.stem.removeprefix("metrics").removeprefix("_") or "clean"
        metrics = io.read_json(file)
        tasks = metrics.get("tasks", {})
        for task, m in metrics.get("per_task", {}).items():
            metric = tasks.get(task, {}).get("metric", "")
            rows.append(f"| {mode} | {task} | {metric} | {m['accuracy']:.4f} | {m['n']} |")
        if mode == "clean":
            details = [
                f"| {name} | {m['accuracy']:.4f} | {m['n']} |" for name, m in metrics.get("per_category", {}).items()
            ]
            for task, entry in tasks.items():
                for key, value in (entry.get("summary") or {}).items():
                    details.append(f"| {task} ({key}) | {value:.4f} | {metrics['per_task'][task]['n']} |")
        gaps.update(metrics.get("visual_reliance_gap") or {})  # carried by the later of clean and blind
    for task, gap in gaps.items():
        details.append(f"| {task}: clean − blind accuracy (visual reliance) | {gap['gap']:+.4f} | {gap['n']} |")
    if details:
        rows += ["", "| task/category (clean) | value | n |", "|---|---|---|", *details]
    rows.append("")
    return rows


def _provenance(cfg: dict, env: dict, done: dict) -> list[str]:
    rows = ["## Provenance", ""]
    study = done.get("study")
    if study:
        levels = ", ".join(f"{k} = {v}" for k, v in (done.get("levels") or {}).items())
        rows.append(
            f"- Study `{study.get('name')}`, variant `{done.get('variant')}` ({levels}), seed {done.get('seed')}; "
            f"the study's held-constant fingerprint (everything but the declared factors, resolved) is "
            f"`{study.get('fingerprint')}`: every variant of the study shares it."
        )
    elif done:
        rows.append(
            f"- Variant `{done.get('variant')}` of a study (seed {done.get('seed')}); fingerprint not recorded."
        )
    else:
        rows.append("- Not part of a vlmlab study.")
    machine = env.get("trained_on") or {}
    if machine:
        packages = ", ".join(f"{k} {v}" for k, v in (machine.get("packages") or {}).items() if v)
        rows.append(f"- Code: vlmlab git `{machine.get('git_sha')}`; {packages}.")
    rows.append(f"- Config hash: `{io.content_hash(cfg)}` (of the resolved config below).")
    rows.append("")
    return rows


def _v(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _seconds(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "?"
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"
