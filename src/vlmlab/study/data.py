"""A finished (or partly finished) study read back from its directory: what the report and analyses consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vlmlab.config import read_yaml
from vlmlab.errors import UserError
from vlmlab.io import content_hash, file_sha256, read_json, read_jsonl, read_parquet, read_record
from vlmlab.runs import RunDir
from vlmlab.study.layout import StudyDir
from vlmlab.study.spec import StudySpec, analysis_factors, external_levels, study_spec_from_dict


@dataclass
class StudyData:
    path: Path
    spec: StudySpec  # as the analyses see it: each factor's levels include those only external variants stand at
    control: dict[str, Any]
    results: pd.DataFrame  # every per-item record + variant, factor columns, seed, mode, format_error
    summary: pd.DataFrame  # see vlmlab.study.results.SUMMARY_COLUMNS
    external: dict[str, dict[str, str]] = field(default_factory=dict)  # external variant -> its levels
    trained_spec: StudySpec | None = None  # the spec as written (the trained variants' factors)
    provenance: dict[str, Any] = field(default_factory=dict)  # vlmlab.study.results.run_provenance

    @property
    def variants(self) -> list[str]:
        """Variant names in the spec's order (trained ones, then external ones)."""
        return list(dict.fromkeys(self.results["variant"]))

    @property
    def trained_variants(self) -> list[str]:
        return [v for v in self.variants if v not in self.external]

    def trained_only(self) -> StudyData:
        """The study without its external variants: for analyses that probe trained runs (weights, configs)."""
        keep = ~self.results["variant"].isin(list(self.external))
        return StudyData(
            path=self.path,
            spec=self.trained_spec or self.spec,
            control=self.control,
            provenance=self.provenance,
            results=self.results[keep].reset_index(drop=True),
            summary=self.summary[~self.summary["variant"].isin(list(self.external))].reset_index(drop=True),
        )

    @property
    def seeds(self) -> list[int]:
        return sorted(self.results["seed"].unique().tolist())

    @property
    def dir(self) -> StudyDir:
        return StudyDir(self.path)

    def run(self, variant: str, seed: int) -> RunDir:
        return self.dir.run(variant, seed)

    def train_log(self, variant: str, seed: int) -> list[dict[str, Any]]:
        log = self.run(variant, seed).train_log
        return read_jsonl(log) if log.is_file() else []

    def run_environments(self) -> dict[str, list[dict[str, Any]]]:
        """Per run (`variant@seed`): the environments it was trained in (first, then any resume elsewhere)."""
        out = {}
        for variant in self.trained_variants:
            for seed in self.seeds:
                rec = run_json(self.run(variant, seed).environment)
                if rec:
                    out[f"{variant}@{seed}"] = [rec["trained_on"], *rec.get("resumed_on", [])]
        return out

    def training_info(self) -> pd.DataFrame:
        """Per variant and seed: steps, seconds, samples/s, parameters, trainable parameters, eval seconds."""
        rows = []
        for variant in self.trained_variants:
            for seed in self.seeds:
                run = self.run(variant, seed)
                train, done = run_json(run.train_info), run_json(run.done)
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
    if not path.is_file():
        return {}
    record = read_json(path)
    return record if isinstance(record, dict) else {}


def load_study_data(path: str | Path) -> StudyData:
    """Read study.yaml, control.json, results.parquet and summary.csv; a missing piece is one clear error."""
    study = StudyDir(path)
    for file in (study.spec, study.control, study.results, study.summary):
        if not file.is_file():
            finished = file in (study.results, study.summary)
            hint = " (run `vlmlab study` until every variant is complete)" if finished else ""
            raise UserError(f"{file}: not found; {study.path} is not a finished study{hint}")
    _check_complete(study)
    spec = study_spec_from_dict(read_yaml(study.spec), str(study.spec))
    return StudyData(
        path=study.path,
        spec=spec.model_copy(update={"factors": analysis_factors(spec)}) if spec.external else spec,
        control=read_record(study.control),
        results=read_parquet(study.results, "study results"),
        summary=_read_summary(study.summary),
        external={name: external_levels(spec, name) for name in spec.external},
        trained_spec=spec,
        provenance=_read_provenance(study),
    )


def _read_provenance(study: StudyDir) -> dict[str, Any]:
    """provenance.json, as complete.json vouches for it; a study written before it existed kept it in control.json."""
    if not study.provenance.is_file():
        legacy = read_record(study.control).get("provenance", {})
        return legacy if isinstance(legacy, dict) else {}
    record = read_record(study.provenance)
    return record if isinstance(record, dict) else {}


def _read_summary(path: Path) -> pd.DataFrame:
    """summary.csv; one that pandas cannot parse is one line naming it."""
    try:
        return pd.read_csv(path)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable summary ({str(exc).splitlines()[0][:120]})") from None


def _check_complete(study: StudyDir) -> None:
    """results.parquet and summary.csv are read only as the pair `complete.json` vouches for."""
    rerun = f"run `vlmlab study` on its spec with --out {study.path} to rewrite them"
    if not study.complete.is_file():
        raise UserError(f"{study.complete}: not found; the results were not completely written ({rerun})")
    vouched = _vouched_files(study)
    optional = [study.provenance] if study.provenance.name in vouched else []  # not written before it existed
    for file in (study.results, study.summary, *optional):
        if not file.is_file() or vouched.get(file.name) != file_sha256(file):
            raise UserError(f"{file}: not the file complete.json vouches for (changed or half-replaced; {rerun})")


def _vouched_files(study: StudyDir) -> dict:
    """complete.json's {file name: sha256}; a marker that is not such a record is one line saying how to rewrite it."""
    try:
        files = read_json(study.complete).get("files")
    except (UserError, ValueError, AttributeError):
        files = None
    if not isinstance(files, dict):
        raise UserError(
            f"{study.complete}: not a valid completion marker; run `vlmlab study` on its spec with --out "
            f"{study.path} to rewrite it"
        )
    return files


def results_fingerprint(study: StudyDir) -> str:
    """Hash of the results an analysis was computed from (complete.json names their files' hashes): the records and
    the summary, so a study's analyses keep their inputs' hash whatever else complete.json vouches for."""
    files = _vouched_files(study)
    return content_hash({k: v for k, v in files.items() if k in (study.results.name, study.summary.name)})
