"""Test helper: synthetic one-factor studies built fast from per-question success probabilities.

`synthetic(probs, ...)` draws each level's answers on each task's questions: `probs[(level, task)]` is an array of
per-question probabilities of a correct answer (or one row of them per seed), so item × variant effects are
whatever the caller puts in them; 0/1 probabilities make answers exact. Seeds are independent draws, or
(`identical`) copies of the first seed's answers, as when seeds do not change what a model answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from vlmlab.study.data import StudyData
from vlmlab.study.spec import study_spec_from_dict

LLM_LEVELS = {"gen1": {"model.llm.id": "llama1-tiny"}, "gen3": {"model.llm.id": "llama3-tiny"}}
TOWER_LEVELS = {
    "vit": {"model.vision": {"id": "vit", "family": "vit"}},
    "vmamba": {"model.vision": {"id": "vmamba", "depths": [1, 1]}},
}
ROUTING_LEVELS = {
    "full": {"model.routing": {"id": "full"}},
    "fastv": {"model.routing": {"id": "fastv", "layer": 1, "ratio": 0.333}},
    "dpvr": {"model.routing": {"id": "dpvr", "layer": 1}},
}
_SPECS: dict = {}


def spec_for(factor: str, levels: dict):
    key = (factor, json.dumps(levels, sort_keys=True))
    if key not in _SPECS:
        keys = sorted({k for sets in levels.values() for k in sets})
        raw = {"name": "sim", "base": "easy-vqa-tiny", "factors": {factor: {"keys": keys, "levels": levels}}}
        _SPECS[key] = study_spec_from_dict(raw)
    return _SPECS[key]


def synthetic(
    probs: dict[tuple[str, str], np.ndarray],
    seeds=(0, 1, 2),
    identical: bool = False,
    rng: np.random.Generator | None = None,
    factor: str = "llm",
    levels: dict | None = None,
    confidence: dict[tuple[str, str], np.ndarray] | None = None,
    path: Path = Path("."),
    boxes: tuple[str, ...] = ("shapes-grounding",),
    box: str | None = None,
) -> StudyData:
    """A StudyData of clean records: one row per level × seed × task × question (see the module docstring).
    `confidence[(level, task)]`: per-question confidences (default: the true probability, a calibrated model;
    NaN: no confidence recorded). Box tasks (`boxes`) get box answers (`box` for every question, else small boxes
    along the top), the others one of five shape names."""
    rng = rng if rng is not None else np.random.default_rng(0)
    levels = levels if levels is not None else LLM_LEVELS
    frames = []
    draws: dict = {}
    for (level, task), p in probs.items():
        p = np.asarray(p, dtype=float)
        n = p.shape[-1]
        for k, seed in enumerate(seeds):
            p_seed = p[k] if p.ndim == 2 else p  # a 2-D array: one row of probabilities per seed
            conf = (confidence or {}).get((level, task), p_seed)
            if identical and k > 0:
                correct = draws[(level, task)]
            else:
                correct = rng.random(n) < p_seed
                draws.setdefault((level, task), correct)
            is_box = task in boxes
            if is_box:
                answer = [box] * n if box else [f"[{i % 50}, 2, {i % 50 + 5}, 9]" for i in range(n)]
            else:
                answer = [f"shape{i % 5}" for i in range(n)]
            frames.append(
                pd.DataFrame(
                    {
                        "variant": level,
                        factor: level,
                        "seed": seed,
                        "task": task,
                        "item_id": np.arange(n),
                        "mode": "clean",
                        "category": "ground" if is_box else "all",
                        "answer": answer,
                        "prediction": np.where(correct, answer, "none"),
                        "correct": correct,
                        "score": correct.astype(float),
                        "confidence": np.broadcast_to(np.asarray(conf, dtype=float), (n,)).copy(),
                        "format_error": False if is_box else None,
                    }
                )
            )
    return StudyData(path, spec_for(factor, levels), {}, pd.concat(frames, ignore_index=True), pd.DataFrame())


def null_probs(rng: np.random.Generator, n: int, spread: float = 0.15, delta: float = 0.0, base=(0.35, 0.65)):
    """(reference, level) per-question probabilities with item difficulty shared by both levels and an item ×
    variant effect of each level (uniform ±`spread`, mean 0), the level's shifted by `delta` on average."""
    b = rng.uniform(*base, n)
    return b + rng.uniform(-spread, spread, n), b + delta + rng.uniform(-spread, spread, n)


def write_finished(study: StudyData, path: Path) -> Path:
    """`study` as a finished study directory (`vlmlab analyze` / `--pilot` read it): spec, control, records,
    summary and the completion marker that vouches for them."""
    import yaml

    from vlmlab import io
    from vlmlab.study.results import summarize

    path.mkdir(parents=True, exist_ok=True)
    (path / "study.yaml").write_text(yaml.safe_dump(study.spec.model_dump(mode="json", exclude_none=True)))
    (path / "control.json").write_text(json.dumps({"passed": True}))
    io.write_parquet(path / "results.parquet", study.results)
    summarize(study.results).to_csv(path / "summary.csv", index=False)
    files = {f: io.file_sha256(path / f) for f in ("results.parquet", "summary.csv")}
    (path / "complete.json").write_text(json.dumps({"variants": {}, "files": files}))
    return path
