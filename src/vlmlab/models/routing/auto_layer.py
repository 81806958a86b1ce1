"""`model.routing: {id: dpvr, layer: auto}`: k is the saturation layer of the `model.init_from` run's attention profile."""

from __future__ import annotations

from pathlib import Path

from vlmlab.config import RunConfig, config_from_dict
from vlmlab.errors import ConfigError


def resolve_auto_layer(cfg: RunConfig) -> RunConfig:
    """The config with `layer: auto` replaced by the measured k (unchanged when nothing is `auto`).

    The profile is `<init_from>/attention.json` when it was computed with the same threshold, else it is
    computed now (`vlmlab attention`) and stored there. The resolved config names the number, so the run's
    config.yaml, the study's control check and its done-markers all see the k that was used."""
    routing = cfg.model.routing
    if routing.id != "dpvr" or routing.params.layer != "auto":
        return cfg
    if not cfg.model.init_from:
        raise ConfigError(
            "model.routing.layer",
            "auto needs model.init_from: the trained model whose attention profile gives the saturation layer",
        )
    record = _profile(Path(cfg.model.init_from), routing.params.threshold)
    k, share = record["saturation_layer"], record["share"]
    if k is None:
        lowest = min(range(len(share)), key=share.__getitem__)
        raise ConfigError(
            "model.routing.layer",
            f"auto: the text→image share of {cfg.model.init_from} never stays "
            f"below {routing.params.threshold} (lowest {share[lowest]:.3f} at layer "
            f"{lowest}); set the layer, or raise model.routing.threshold",
        )
    k = min(max(k, 1), len(share) - 1)  # DPVR needs at least one shared layer and the last layer for fusion
    raw = cfg.resolved()
    raw["model"]["routing"]["layer"] = k
    return config_from_dict(raw)


def _profile(run_dir: Path, threshold: float) -> dict:
    from vlmlab.analysis.attention import RECORD, attention_profile, saturation_layer
    from vlmlab.io import read_json

    stored = run_dir / RECORD
    if stored.is_file():
        record = read_json(stored)
        return dict(record, threshold=threshold, saturation_layer=saturation_layer(record["share"], threshold))
    return attention_profile(run_dir, threshold=threshold)
