"""Shared helpers of the property-based bad-input tests: mutate valid data, run the CLI, tally the cases."""

from __future__ import annotations

import copy
import os
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(  # VLMLAB_FUZZ_EXAMPLES=1000 VLMLAB_FUZZ_RANDOM=1 for a longer, non-derandomized search
    max_examples=int(os.environ.get("VLMLAB_FUZZ_EXAMPLES", 100)),
    deadline=None,
    derandomize=not os.environ.get("VLMLAB_FUZZ_RANDOM"),
    suppress_health_check=list(HealthCheck),
    database=None,
)

TALLY: dict[str, Counter] = {}  # family -> {"rejected": n, "accepted": n}; printed in the pytest summary

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
KEY = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10)


def node_paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key / list-index path in nested data (depth first)."""
    out = []
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return out
    for key, value in items:
        out.append(prefix + (key,))
        out.extend(node_paths(value, prefix + (key,)))
    return out


def mapping_paths(tree: Any) -> list[tuple]:
    return [()] + [p for p in node_paths(tree) if isinstance(get(tree, p), dict)]


def get(tree: Any, path: tuple) -> Any:
    for key in path:
        tree = tree[key]
    return tree


@st.composite
def mutations(draw, valid: dict) -> tuple[dict, str, tuple]:
    """(mutated copy, kind, path): a key deleted, a value replaced by junk, or an unknown key added."""
    tree = copy.deepcopy(valid)
    kind = draw(st.sampled_from(["delete", "replace", "unknown-key"]))
    if kind == "unknown-key":
        path = draw(st.sampled_from(mapping_paths(tree)))
        node = get(tree, path)
        key = draw(KEY.filter(lambda k: k not in node))
        node[key] = draw(JUNK)
        return tree, kind, path + (key,)
    path = draw(st.sampled_from(node_paths(tree)))
    parent = get(tree, path[:-1])
    if kind == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JUNK)
    return tree, kind, path


def dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def names_the_path(line: str, path: tuple) -> bool:
    """The error names the mutated key: its dotted path, its parent's (the value there is what broke, e.g. a
    list left empty), or its own name (a check across fields, e.g. `num_heads ... does not divide hidden_size`)."""
    candidates = {dotted(path)}
    if len(path) >= 2:
        candidates.add(dotted(path[:-1]))
    if isinstance(path[-1], str):
        candidates.add(path[-1])
    elif len(path) >= 3:  # an entry of a list: the mapping that holds the list (e.g. a factor for its keys)
        candidates.add(dotted(path[:-2]))
    return any(c in line for c in candidates)


def tally(family: str, outcome: str) -> None:
    TALLY.setdefault(family, Counter())[outcome] += 1
