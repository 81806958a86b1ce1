"""`representations`: linear CKA of LLM hidden states — clean vs perturbed, seed vs seed, variant vs variant."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from vlmlab.analysis.base import Analysis
from vlmlab.measure.representations import RepresentationFeatures, layer, layer_count
from vlmlab.registry import PartParams, register_analysis
from vlmlab.render import plots
from vlmlab.render.document import Section
from vlmlab.study.data import StudyData


def _centred_cross(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    return x.T @ y


def linear_cka(x, y) -> float:
    """Linear CKA (Kornblith et al. 2019) of (n, d1) and (n, d2) representations of the same n inputs.

    ||XᵀY||²_F / (||XᵀX||_F ||YᵀY||_F) after centring each column: 1 for identical (or rotated, or
    isotropically scaled) representations, near 0 for unrelated ones. Feature-space form: memory
    d1·d2, never n².
    """
    x, y = torch.as_tensor(np.asarray(x)), torch.as_tensor(np.asarray(y))
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka: {x.shape[0]} vs {y.shape[0]} rows (the same inputs are needed)")
    xy = _centred_cross(x, y).pow(2).sum()
    xx = _centred_cross(x, x).pow(2).sum().sqrt()
    yy = _centred_cross(y, y).pow(2).sum().sqrt()
    denom = xx * yy
    return float(xy / denom) if denom > 0 else float("nan")


def per_layer_cka(a: Path, b: Path) -> list[float]:
    return [linear_cka(layer(a, i), layer(b, i)) for i in range(min(layer_count(a), layer_count(b)))]


def cross_layer_cka(a: Path, b: Path) -> np.ndarray:
    na, nb = layer_count(a), layer_count(b)
    out = np.zeros((na, nb))
    for i in range(na):
        x = layer(a, i)
        for j in range(nb):
            out[i, j] = linear_cka(x, layer(b, j))
    return out


@dataclass
class RepresentationsResult:
    seed: int  # the seed of the variant-vs-variant comparison
    tables: dict[str, pd.DataFrame]  # clean_vs_perturbed, question_variant, seed_vs_seed, variant_vs_variant, stability


@register_analysis("representations")
class Representations(Analysis):
    """How stable each variant's LLM representations are (CKA per layer) and how alike the variants' are."""

    class Params(PartParams):
        n_probe: int = Field(512, ge=8)  # probe items, shared equally by the evaluation tasks
        perturb: str = "noise:0.1"  # the image perturbation for the clean-vs-perturbed comparison
        question_suffix: str = " Answer briefly."  # a question variant with the same meaning ("" = skip)

    title = "Representation stability (linear CKA)"
    Result = RepresentationsResult

    def conditions(self) -> list[dict]:
        """Clean, perturbed images, and (unless `question_suffix` is empty) reworded questions."""
        p = self.params
        out = [{}, {"perturb": p.perturb}]
        return out + ([{"question_suffix": p.question_suffix}] if p.question_suffix else [])

    def measurements(self, study: StudyData) -> list[RepresentationFeatures]:
        """Every run's features under every condition, run by run."""
        n = self.params.n_probe
        return [
            RepresentationFeatures(study.run(v, s).path, n_probe=n, **condition)
            for v in study.variants
            for s in study.seeds
            for condition in self.conditions()
        ]

    def compute(self, study: StudyData, measured: list[RepresentationFeatures]) -> RepresentationsResult:
        p = self.params
        k = len(self.conditions())
        runs = [(v, s) for v in study.variants for s in study.seeds]
        feats = {run: [m.read() for m in measured[i * k : (i + 1) * k]] for i, run in enumerate(runs)}
        perturbed = [
            {"variant": v, "seed": s, "layer": i + 1, "cka": c}
            for (v, s), f in feats.items()
            for i, c in enumerate(per_layer_cka(f[0], f[1]))
        ]
        seeds = [
            {"variant": v, "seeds": f"{s1}-{s2}", "layer": i + 1, "cka": c}
            for v in study.variants
            for s1, s2 in itertools.combinations(study.seeds, 2)
            for i, c in enumerate(per_layer_cka(feats[v, s1][0], feats[v, s2][0]))
        ]
        s0 = study.seeds[0]
        cross = [
            {"a": a, "b": b, "layer_a": i + 1, "layer_b": j + 1, "cka": float(c)}
            for a, b in itertools.combinations(study.variants, 2)
            for (i, j), c in np.ndenumerate(cross_layer_cka(feats[a, s0][0], feats[b, s0][0]))
        ]
        reworded = [
            {"variant": v, "seed": s, "layer": i + 1, "cka": c}
            for (v, s), f in feats.items()
            if p.question_suffix
            for i, c in enumerate(per_layer_cka(f[0], f[2]))
        ]
        perturbed_df = pd.DataFrame(perturbed)
        score = perturbed_df.groupby("variant", sort=False)["cka"].mean().rename("stability").reset_index()
        reworded_df = pd.DataFrame(reworded)
        if not reworded_df.empty:
            score["question_stability"] = score["variant"].map(reworded_df.groupby("variant")["cka"].mean())
        tables = {
            "clean_vs_perturbed": perturbed_df,
            "question_variant": reworded_df,
            "seed_vs_seed": pd.DataFrame(seeds),
            "variant_vs_variant": pd.DataFrame(cross),
            "stability": score,
        }
        return RepresentationsResult(s0, tables)

    def render(self, r: RepresentationsResult) -> Section:
        p, section = self.params, Section(self.title)
        t = r.tables
        section.text(
            f"Hidden states at the last prompt token (where the answer starts) of every LLM layer, on {p.n_probe} fixed "
            "probe items from the evaluation tasks, captured with forward hooks. Linear CKA (Kornblith et al. 2019) "
            f"compares them: per layer between clean and `{p.perturb}` images (the stability score is its mean over "
            "layers), between each question and a meaning-preserving variant of it, between seeds of a variant, and "
            "between variants (every layer pair)."
        )
        section.figure(
            plots.lines(t["clean_vs_perturbed"], "layer", "cka", ylabel="CKA clean vs perturbed"),
            "Per-layer CKA between clean and perturbed-image representations (1 = unchanged).",
            "cka_perturbed",
        )
        if not t["question_variant"].empty:
            section.figure(
                plots.lines(t["question_variant"], "layer", "cka", ylabel="CKA question vs variant"),
                f"Per-layer CKA between each question and the same question + `{p.question_suffix.strip()}`.",
                "cka_question_variant",
            )
        section.table(
            t["stability"],
            "Stability score: mean CKA over layers (seeds pooled); `question_stability` "
            "the same for the question variant.",
        )
        if t["seed_vs_seed"].empty:
            section.text("One seed per variant: no seed-vs-seed comparison (add seeds to the study).")
        else:
            section.figure(
                plots.lines(t["seed_vs_seed"], "layer", "cka", ylabel="CKA seed vs seed"),
                "Per-layer CKA between seeds of the same variant.",
                "cka_seeds",
            )
        cross = t["variant_vs_variant"]
        for (a, b), f in cross.groupby(["a", "b"], sort=False):
            grid = f.pivot(index="layer_a", columns="layer_b", values="cka")
            grid.index = [f"{a} L{i}" for i in grid.index]
            grid.columns = [f"{b} L{j}" for j in grid.columns]
            section.figure(
                plots.heatmap(grid, "CKA", fmt="{:.2f}"),
                f"CKA between every layer of {a} and of {b} (seed {r.seed}, clean images).",
                f"cka_{a}_vs_{b}",
            )
        diag = cross[cross["layer_a"] == cross["layer_b"]]
        section.table(
            diag.drop(columns=["layer_b"]).rename(columns={"layer_a": "layer"}),
            "Variant vs variant at the same layer (clean images).",
        )
        return section
