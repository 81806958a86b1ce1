"""Registries of swappable parts keyed by short string ids; each part registers with one decorator.

This module is a leaf: it imports no part. The built-in parts fill the registries when the application
edge calls `vlmlab.parts.load_builtin_parts()` (the CLI does at start-up, tests in their conftest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from vlmlab.errors import ConfigError

T = TypeVar("T")


class PartParams(BaseModel):
    """Base for a part's own config fields; unknown keys are errors.

    `identity_fields` name the fields that make the part what it is (a rung's context, vocabulary, chat
    template, pretraining recipe): a study factor that declares any key of the part varies these with it.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    identity_fields: ClassVar[tuple[str, ...]] = ()


class Registry(Generic[T]):
    """Maps an id to a part class. A registered class carries a `Params` (a PartParams subclass)."""

    def __init__(self, noun: str):
        self.noun = noun
        self._parts: dict[str, type[T]] = {}

    def register(self, part_id: str) -> Callable[[type[T]], type[T]]:
        def decorate(cls: type[T]) -> type[T]:
            if part_id in self._parts:
                raise ValueError(f"{self.noun} id {part_id!r} is registered twice")
            params = getattr(cls, "Params", None)
            if not (isinstance(params, type) and issubclass(params, PartParams)):
                raise TypeError(f"{cls.__name__} must define a nested `Params(PartParams)` class")
            cls.part_id = part_id  # type: ignore[attr-defined]
            self._parts[part_id] = cls
            return cls

        return decorate

    def ids(self) -> list[str]:
        return list(self._parts)

    def get(self, part_id: str, key: str = "id") -> type[T]:
        if part_id not in self._parts:
            known = ", ".join(self._parts) or "none: call vlmlab.parts.load_builtin_parts() first"
            raise ConfigError(key, f"unknown {self.noun} {part_id!r} (known: {known})")
        return self._parts[part_id]

    def items(self) -> list[tuple[str, type[T]]]:
        return list(self._parts.items())


VISION_ENCODERS: Registry[Any] = Registry("vision encoder")
PROJECTORS: Registry[Any] = Registry("projector")
LLM_BACKBONES: Registry[Any] = Registry("backbone")
ROUTING: Registry[Any] = Registry("routing strategy")
TASKS: Registry[Any] = Registry("task")
ANALYSES: Registry[Any] = Registry("analysis")

register_vision_encoder = VISION_ENCODERS.register
register_projector = PROJECTORS.register
register_llm = LLM_BACKBONES.register
register_routing = ROUTING.register
register_task = TASKS.register
register_analysis = ANALYSES.register

ALL_REGISTRIES = {
    "vision encoders": VISION_ENCODERS,
    "projectors": PROJECTORS,
    "LLM backbones": LLM_BACKBONES,
    "routing strategies": ROUTING,
    "tasks": TASKS,
    "analyses": ANALYSES,
}
