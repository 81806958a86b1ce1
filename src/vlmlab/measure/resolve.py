"""Config fields read off measurements (a routing strategy's `measured_field`, e.g. DPVR's `layer: auto`): a pure
function of the config and stored artifacts.

`resolve_config` never runs a model. When the measurement a field needs is missing it raises
`MeasurementNeeded` naming it; the caller (the study runner, `vlmlab train`) measures it as a named step
and resolves again. So `vlmlab study --check` and the trainer never load a model to read a config.
"""

from __future__ import annotations

from vlmlab.config import RunConfig, config_from_dict
from vlmlab.errors import ConfigError
from vlmlab.measure.attention import AttentionProfile
from vlmlab.measure.base import measure_all
from vlmlab.registry import ROUTING
from vlmlab.runs import init_run

PROFILE_PROBE = 256  # probe items of the attention profile a `layer: auto` is read from (`vlmlab attention`'s default)


class MeasurementNeeded(Exception):
    """A config field is read off a measurement that has not been made yet (`measurement`, for `key`)."""

    def __init__(self, measurement: AttentionProfile, key: str):
        super().__init__(f"{key}: needs the {measurement.describe()}")
        self.measurement, self.key = measurement, key


def needed_profile(cfg: RunConfig) -> AttentionProfile | None:
    """The attention profile the routing strategy reads a field from (None when every field is given)."""
    routing = cfg.model.routing
    strategy = ROUTING.get(routing.id)
    if strategy.attention_threshold(routing.params) is None:
        return None
    if not cfg.model.init_from:
        raise ConfigError(
            measured_key(cfg),
            "auto needs model.init_from: the trained model whose attention profile gives its value",
        )
    init_run(cfg)  # finished, or one line naming model.init_from
    return AttentionProfile(cfg.model.init_from, n_probe=PROFILE_PROBE)


def measured_key(cfg: RunConfig) -> str:
    """The dotted key of the routing field read off the profile (`model.routing.layer` for DPVR)."""
    return f"model.routing.{ROUTING.get(cfg.model.routing.id).measured_field}"


def resolve_config(cfg: RunConfig) -> RunConfig:
    """The config with every measured field filled in (unchanged when there is none). The resolved config names
    the number, so the run's config.yaml, a study's control check and its done-markers all see the k used."""
    profile = needed_profile(cfg)
    if profile is None:
        return cfg
    if not profile.done():
        raise MeasurementNeeded(profile, measured_key(cfg))
    routing = cfg.model.routing
    fields = ROUTING.get(routing.id).with_profile(routing.params, profile.read()["share"], cfg.model.init_from)
    raw = cfg.resolved()
    raw["model"]["routing"] = {"id": routing.id, **fields}
    return config_from_dict(raw)


def resolve_with_measurements(cfg: RunConfig) -> RunConfig:
    """`resolve_config`, measuring first what it needs (the explicit step `vlmlab train` takes before training)."""
    try:
        return resolve_config(cfg)
    except MeasurementNeeded as needed:
        measure_all([needed.measurement])
        return resolve_config(cfg)
