"""The control check: variants may differ only in the keys their factors declare, and see the same data order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vlmlab.config import PART_REGISTRIES, flatten
from vlmlab.data.order import training_order_fingerprints
from vlmlab.data.sources import load_stage_items
from vlmlab.errors import UserError
from vlmlab.io import content_hash
from vlmlab.study.spec import StudySpec, Variant

ALWAYS_VARIES = ("name", "seed")  # a variant's run name, and the seed (compared within one seed group)


def _nothing() -> None:
    """The default progress callback: no display."""


class ControlViolation(UserError):
    """Two variants differ in a key that no factor declares."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=2)


def covered(key: str, declared: set[str]) -> bool:
    """A key is covered by a declared key equal to it or above it (`model.llm` covers `model.llm.id`)."""
    return any(key == d or key.startswith(d + ".") for d in declared)


def held_constant(variant: Variant, declared: set[str]) -> dict[str, Any]:
    """The resolved config minus the declared keys, the name and the seed: what must match across variants."""
    flat = flatten(variant.resolved)
    return {k: v for k, v in flat.items() if not covered(k, declared | set(ALWAYS_VARIES))}


def with_identity_fields(declared: set[str], variants: list[Variant]) -> set[str]:
    """Declared keys plus the identity fields of every part a declared key touches.

    Declaring `model.llm.id` varies the rung, and with it what the rung is made of (its context, vocabulary,
    chat template, pretraining recipe); size knobs such as `model.llm.hidden_size` stay held constant.
    """

    out = set(declared)
    for group, registry in PART_REGISTRIES.items():
        part = f"model.{group}"
        if not any(covered(d, {part}) or covered(part, {d}) for d in declared):
            continue
        for v in variants:
            cls = registry.get(v.resolved["model"][group]["id"])
            out.update(f"{part}.{field}" for field in cls.Params.identity_fields)
    return out


def check_config_control(
    spec: StudySpec, variants: list[Variant], tick: Callable[[], None] = _nothing
) -> dict[str, Any]:
    """Raise ControlViolation naming the key and both values if two variants differ outside the factors' keys.
    `tick` is called once per variant checked (progress)."""
    declared = {k for f in spec.factors.values() for k in f.keys}
    varying = with_identity_fields(declared, variants)
    reference = variants[0]
    ref_held = held_constant(reference, varying)
    tick()
    for other in variants[1:]:
        tick()
        held = held_constant(other, varying)
        for key in sorted(set(ref_held) | set(held)):
            a, b = ref_held.get(key, "<unset>"), held.get(key, "<unset>")
            if a != b:
                raise ControlViolation(
                    f"control check failed: variants {reference.name} and {other.name} differ in {key} "
                    f"({a!r} vs {b!r}), which no factor declares (declared: {', '.join(sorted(declared))})"
                )
    first_seed = [v for v in variants if v.seed == spec.seeds[0]]
    identity = sorted(varying - declared)
    return {
        "fingerprint": content_hash(ref_held),
        "held_constant_keys": len(ref_held),
        "declared": sorted(declared),
        "varied": {v.name: {k: _value_at(v.resolved, k) for k in sorted(declared)} for v in first_seed},
        # what each varied part is made of (a rung's context, vocabulary, template, pretraining recipe)
        "varied_with_parts": {v.name: {k: _value_at(v.resolved, k) for k in identity} for v in first_seed},
    }


def _value_at(data: Any, key: str) -> Any:
    node = data
    for part in key.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def order_settings(variant: Variant) -> dict[str, Any]:
    """The resolved keys that decide a run's data order: the training data, batch sizes, stage lengths."""
    r = variant.resolved
    stages = [{k: st[k] for k in ("name", "epochs", "max_steps", "batch_size", "data")} for st in r["train"]["stages"]]
    return {
        "data.train": r["data"]["train"],
        "batch_size": r["train"]["batch_size"],
        "grad_accum": r["train"]["grad_accum"],
        "group_by_length": r["train"]["group_by_length"],
        "stages": stages,
        "seed": r["seed"],
    }


def check_order_control(
    spec: StudySpec, variants: list[Variant], tick: Callable[[], None] = _nothing
) -> dict[str, Any]:
    """Per seed, the hash of the first batches' item ids of every training stage must match across variants.

    A difference is accepted only when the variants' order settings differ (a factor that declares the
    batch size, say); then it is recorded as expected. The training items are loaded, and their ids and lengths
    read, once per data source; each variant's order is still drawn from its own config, so a large design stays
    fast without trusting that equal settings give equal orders.
    """

    items_cache: dict[str, list] = {}
    columns: dict[int, tuple] = {}  # id(items) -> (item ids, lengths), shared by the variants on those items
    per_seed: dict[str, dict[str, list[str]]] = {}
    settings: dict[str, dict[str, Any]] = {}
    for v in variants:
        tick()

        def stage_items(s: int, v=v) -> list:
            stage_data = v.resolved["train"]["stages"][s].get("data")
            key = content_hash(
                [v.resolved["data"]["train"] if stage_data is None else stage_data, v.resolved["data"]["image"]]
            )
            if key not in items_cache:
                items_cache[key] = load_stage_items(v.cfg, s)
            return items_cache[key]

        per_seed.setdefault(str(v.seed), {})[v.name] = training_order_fingerprints(v.cfg, stage_items, columns)
        settings[f"{v.name}/{v.seed}"] = order_settings(v)
    expected = []
    for seed, by_variant in per_seed.items():
        names = list(by_variant)
        for name in names[1:]:
            if by_variant[name] == by_variant[names[0]]:
                continue
            if settings[f"{name}/{seed}"] == settings[f"{names[0]}/{seed}"]:
                raise ControlViolation(
                    f"control check failed: seed {seed}: variants {names[0]} and {name} have the same data settings "
                    f"but see different training orders ({by_variant[names[0]]} vs {by_variant[name]})"
                )
            expected.append(f"seed {seed}: {names[0]} vs {name}")
    return {"identical": not expected, "expected_differences": expected, "per_seed": per_seed}
