"""The import rule of docs/architecture.md: a module imports only from its own layer or the layers below it.

Every `import vlmlab...` counts, wherever it is written (module level, inside a function, under
TYPE_CHECKING): a link hidden in a function body is still a link.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vlmlab

PACKAGE = Path(vlmlab.__file__).parent

# lowest first; a module belongs to the layer of its longest matching prefix
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("vlmlab", "vlmlab.errors", "vlmlab.io", "vlmlab.progress", "vlmlab.environment",
                    "vlmlab.distributed", "vlmlab.cache", "vlmlab.registry", "vlmlab.render", "vlmlab.locks",
                    "vlmlab.bounded", "vlmlab.grants")),
    ("training step", ("vlmlab.training_step",)),
    ("config", ("vlmlab.config",)),
    ("lm", ("vlmlab.lm",)),
    ("models", ("vlmlab.models",)),
    ("data", ("vlmlab.data", "vlmlab.metrics")),
    ("runs", ("vlmlab.checkpoint", "vlmlab.run_layout", "vlmlab.runs", "vlmlab.integrity")),
    ("train", ("vlmlab.train",)),
    ("evaluation", ("vlmlab.evaluation",)),
    ("interop", ("vlmlab.interop",)),
    ("measure", ("vlmlab.measure",)),
    ("study", ("vlmlab.study",)),
    ("analysis", ("vlmlab.analysis",)),
    ("report", ("vlmlab.report",)),
    ("application", ("vlmlab.cli", "vlmlab.parts", "vlmlab.__main__", "vlmlab.plan", "vlmlab.launch")),
]  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    best, depth = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = index, prefix.count(".")
    assert best is not None, f"{module} is in no layer: add it to LAYERS and to docs/architecture.md"
    return best


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported vlmlab module) for every import statement in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "vlmlab"]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and node.module.split(".")[0] == "vlmlab"
        ):
            # `from vlmlab import io` imports the module vlmlab.io; `from vlmlab.x import name` imports vlmlab.x
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").is_file() or (
                    PACKAGE.parent / Path(*candidate.split(".")) / "__init__.py"
                ).is_file()
                out.append((node.lineno, candidate if is_module else node.module))
    return out


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    for path in SOURCES:
        layer_of(module_name(path))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_no_module_imports_a_higher_layer(path):
    module = module_name(path)
    own = layer_of(module)
    upward = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} ({LAYERS[layer_of(target)][0]}, above "
        f"{LAYERS[own][0]})"
        for line, target in imports(path)
        if layer_of(target) > own
    ]
    assert not upward, "\n".join(upward)


def test_the_rule_catches_an_upward_import(tmp_path):
    """The checker itself: a models module that imports an analysis is reported."""
    bad = PACKAGE / "models" / "_upward_probe.py"
    assert not bad.exists()
    bad.write_text("def f():\n    from vlmlab.analysis.overlap import pair_stats\n")
    try:
        found = [t for _, t in imports(bad) if layer_of(t) > layer_of(module_name(bad))]
    finally:
        bad.unlink()
    assert found == ["vlmlab.analysis.overlap"]


def test_lower_layers_never_name_analysis_and_the_registry_imports_no_part():
    for folder in ("models", "evaluation", "train"):
        for path in (PACKAGE / folder).rglob("*.py"):
            assert "vlmlab.analysis" not in path.read_text(encoding="utf-8"), path
    assert "vlmlab.analysis" not in (PACKAGE / "config.py").read_text(encoding="utf-8")
    registry_imports = {t for _, t in imports(PACKAGE / "registry.py")}
    assert registry_imports <= {"vlmlab.errors"}, registry_imports


def test_no_import_cycle():
    """No module reaches itself through imports (any import, module level or not): the graph is a DAG."""
    graph = {module_name(p): {t for _, t in imports(p)} for p in SOURCES}
    known = set(graph)

    def owner(target: str) -> str:  # `vlmlab.x.name` -> the module vlmlab.x
        while target not in known and "." in target:
            target = target.rsplit(".", 1)[0]
        return target

    graph = {m: {owner(t) for t in ts} - {m} for m, ts in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
