"""The application edge: fill the registries with the built-in parts, tasks and analyses, then any plugins.

Called once by whoever starts vlmlab (the CLI entry point, the test conftest, a script); the library
below never fills a registry on its own, so `ids()`, `get()` and `items()` always agree."""

from __future__ import annotations

from importlib.metadata import entry_points

from vlmlab.errors import UserError

PLUGIN_GROUP = "vlmlab.parts"  # a package's entry points in this group are modules that register parts

_loaded = False


def load_builtin_parts() -> None:
    """Import the modules whose decorators fill the registries (idempotent): vision encoders, projectors,
    LLM backbones, routing strategies, task formats, then the task YAMLs over them, analyses, and plugins."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import vlmlab.analysis  # noqa: F401
    import vlmlab.data.tasks  # noqa: F401
    import vlmlab.models.llm  # noqa: F401
    import vlmlab.models.projectors  # noqa: F401
    import vlmlab.models.routing  # noqa: F401
    import vlmlab.models.vision  # noqa: F401
    from vlmlab.data.tasks.declarative import register_declarative_tasks

    for plugin in entry_points(group=PLUGIN_GROUP):
        try:
            plugin.load()
        except Exception as exc:  # a broken plugin is the user's environment, not a vlmlab bug
            raise UserError(
                f"plugin {plugin.name!r} ({plugin.value}, entry point group {PLUGIN_GROUP}): "
                f"cannot be loaded ({type(exc).__name__}: {exc})"
            ) from None
    register_declarative_tasks()  # task YAMLs, on top of every format registered above
