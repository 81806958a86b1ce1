"""A finished (or partly finished) study read back from its directory: what the report and analyses consume."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from vlmlab.errors import UserError
from vlmlab.io import file_sha256, read_json, read_jsonl
from vlmlab.study.spec import StudySpec


@dataclass
class StudyData:
    path: Path
    spec: StudySpec
    control: dict[str, Any]
    results: pd.DataFrame  # every per-item record + variant, factor columns, seed, mode, format_error
    summary: pd.DataFrame  # see vlmlab.study.results.SUMMARY_COLUMNS

    @property
    def variants(self) -> list[str]:
        """Variant names in the spec's order."""
        return list(dict.fromkeys(self.results["variant"]))

    @property
    def seeds(self) -> list[int]:
        return sorted(self.results["seed"].unique().tolist())

    def run_dir(self, variant: str, seed: int) -> Path:
        return self.path / "variants" / variant / f"seed-{seed}"

    def train_log(self, variant: str, seed: int) -> list[dict[str, Any]]:
        log = self.run_dir(variant, seed) / "train_log.jsonl"
        return read_jsonl(log) if log.is_file() else []

    def run_environments(self) -> dict[str, list[dict[str, Any]]]:
        """Per run (`variant@seed`): the environments it was trained in (first, then any resume elsewhere)."""
        out = {}
        for variant in self.variants:
            for seed in self.seeds:
                rec = run_json(self.run_dir(variant, seed) / "environment.json")
                if rec:
                    out[f"{variant}@{seed}"] = [rec["trained_on"], *rec.get("resumed_on", [])]
        return out

    def training_info(self) -> pd.DataFrame:
        """Per variant and seed: steps, seconds, samples/s, parameters, trainable parameters, eval seconds."""
        rows = []
        for variant in self.variants:
            for seed in self.seeds:
                vdir = self.run_dir(variant, seed)
                train = run_json(vdir / "train.json")
                done = run_json(vdir / "done.json")
                params = train.get("parameters", {})
                vp = train.get("vision_pretrain", {})
                vision_s = 0.0 if vp.get("cached") else float(vp.get("seconds", 0.0))
                lm = train.get("llm_pretraining") or {}
                rows.append(
                    {
                        "variant": variant,
                        "seed": seed,
                        "train_steps": train.get("steps"),
                        "train_s": train.get("seconds"),
                        "vision_pretrain_s": vision_s,
                        "vqa_stages_s": None if train.get("seconds") is None else train["seconds"] - vision_s,
                        "samples_per_s": train.get("samples_per_s"),
                        "params_llm": params.get("llm"),
                        "params_vision": params.get("vision"),
                        "params_projector": params.get("projector"),
                        "trainable_max": max(
                            (sum(t.values()) for t in train.get("trainable", {}).values()), default=None
                        ),
                        "eval_s": done.get("eval_seconds"),
                        "vision_pretrain": "cached"
                        if train.get("vision_pretrain", {}).get("cached")
                        else ("trained" if train.get("vision_pretrain") else "none"),
                        "llm_bits_per_byte": lm.get("heldout_bits_per_byte"),
                        "llm_pretrain_tokens": lm.get("tokens_seen"),
                    }
                )
        return pd.DataFrame(rows)


def run_json(path: Path) -> dict[str, Any]:
    """A run's JSON record (train.json, done.json), or {} when the run has not written it."""
    return json.loads(path.read_text()) if path.is_file() else {}


def load_study_data(path: str | Path) -> StudyData:
    """Read study.yaml, control.json, results.parquet and summary.csv; a missing piece is one clear error."""
    from vlmlab.study.spec import study_spec_from_dict

    path = Path(path)
    for name in ("study.yaml", "control.json", "results.parquet", "summary.csv"):
        if not (path / name).is_file():
            hint = (
                " (run `vlmlab study` until every variant is complete)"
                if name in ("results.parquet", "summary.csv")
                else ""
            )
            raise UserError(f"{path / name}: not found; {path} is not a finished study{hint}")
    _check_complete(path)
    spec = study_spec_from_dict(yaml.safe_load((path / "study.yaml").read_text()), str(path / "study.yaml"))
    return StudyData(
        path=path,
        spec=spec,
        control=json.loads((path / "control.json").read_text()),
        results=pd.read_parquet(path / "results.parquet"),
        summary=pd.read_csv(path / "summary.csv"),
    )


def _check_complete(path: Path) -> None:
    """results.parquet and summary.csv are read only as the pair `complete.json` vouches for."""
    marker = path / "complete.json"
    rerun = f"run `vlmlab study` on its spec with --out {path} to rewrite them"
    if not marker.is_file():
        raise UserError(f"{marker}: not found; the results were not completely written ({rerun})")
    files = read_json(marker).get("files", {})
    for name in ("results.parquet", "summary.csv"):
        if files.get(name) != file_sha256(path / name):
            raise UserError(
                f"{path / name}: not the file complete.json vouches for (changed or half-replaced; {rerun})"
            )
