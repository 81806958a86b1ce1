"""Bounded readers for text vlmlab did not write itself: YAML, JSON and JSON lines, each limited in size, nesting
depth and (YAML) alias expansion, so a hostile or broken file ends in one line instead of a hang or a traceback.

Every reader of configs, specs, task files, dataset files, answer files and a run's or study's own records goes
through here (docs/reliability.md, "Threat model"). A refusal is a UserError naming the file (and line): exit 2
for configs and specs, 1 for data.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from vlmlab.errors import EXIT_CONFIG, EXIT_DATA, UserError

YAML_MAX_BYTES = 4 << 20  # a config, study spec or task file; the largest built-in one is a few KiB
YAML_MAX_DEPTH = 64  # nesting, counted through aliases
YAML_ALIAS_BUDGET = 10_000  # nodes that aliases may expand to, over the whole document
JSON_MAX_DEPTH = 64  # dataset files nest 3-5 levels (COCO segmentation polygons: 4)
JSONL_MAX_LINE = 16 << 20  # one JSON-lines record (a 1.2 MB question passes: the evaluation pre-flight judges it)
RECORD_MAX_BYTES = 256 << 20  # a JSON record of a run or study (manifest, trainer state, markers, analyses)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no tags that build objects), refusing a key given twice, nesting deeper than
    YAML_MAX_DEPTH and aliases that would expand to more than YAML_ALIAS_BUDGET nodes or refer to themselves.

    Aliases are checked when the node graph is composed, before anything is constructed: an alias is a
    reference to its anchor's node, so the expanded size and height of each anchor are summed once per use
    (memoized per node, so the check itself is linear)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0
        self._open: set[str] = set()  # anchors whose node is still being composed
        self._extent: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, expanded height)

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) and event.anchor in self.anchors:
            if event.anchor in self._open:
                raise _refusal(f"alias *{event.anchor} refers to a node that contains it", event)
            size, height = self._measure(self.anchors[event.anchor])
            self._expanded += size
            if self._expanded > YAML_ALIAS_BUDGET:
                raise _refusal(f"aliases expand to more than {YAML_ALIAS_BUDGET:,} nodes", event)
            if self._depth + height > YAML_MAX_DEPTH:
                raise _refusal(f"nested deeper than {YAML_MAX_DEPTH} levels (through alias *{event.anchor})", event)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > YAML_MAX_DEPTH:
            raise _refusal(f"nested deeper than {YAML_MAX_DEPTH} levels", event)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open.discard(anchor)

    def _measure(self, root) -> tuple[int, int]:
        """(nodes, height) of `root` with every alias expanded, without recursion."""
        stack = [(root, False)]
        while stack:
            node, children_done = stack.pop()
            if id(node) in self._extent:
                continue
            children = _children(node)
            if children_done or not children:
                sizes = [self._extent[id(c)] for c in children]
                self._extent[id(node)] = (1 + sum(s for s, _ in sizes), 1 + max((h for _, h in sizes), default=0))
                continue
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in self._extent)
        return self._extent[id(root)]

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the constructor below reports it
                duplicate = False
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key) if not isinstance(key, (list, dict)) else None
        return super().construct_mapping(node, deep)


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


class _Refused(yaml.composer.ComposerError):
    """Valid YAML that goes past a bound (depth, aliases): refused, not misparsed."""


def _refusal(problem: str, event) -> yaml.YAMLError:
    return _Refused(None, None, problem, event.start_mark)


def yaml_data(text: str, source: str, exit_code: int = EXIT_CONFIG) -> Any:
    """YAML text as data; too large, too deep, an alias bomb, bad YAML or a duplicate key is one line naming
    `source` and the line."""
    if len(text) > YAML_MAX_BYTES:
        raise UserError(f"{source}: larger than {YAML_MAX_BYTES >> 20} MiB (not a config)", exit_code=exit_code)
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        if isinstance(exc, _Refused):
            raise UserError(f"{source}:{where} refused: {problem}", exit_code=exit_code) from None
        detail = f" ({shorten(problem)})" if problem else ""
        raise UserError(f"{source}:{where} not valid YAML{detail}", exit_code=exit_code) from None
    except RecursionError:  # the limits above come first; this is the last guard
        raise UserError(f"{source}: nested too deeply", exit_code=exit_code) from None


def yaml_file(path: str | Path, what: str = "config file", exit_code: int = EXIT_CONFIG) -> Any:
    """A YAML file as data: missing, too large, not UTF-8 text or refused by `yaml_data` is one line."""
    path = Path(path)
    text = _read_text(path, YAML_MAX_BYTES, what, exit_code, f"not UTF-8 text (a {what} is YAML)")
    return yaml_data(text, str(path), exit_code)


def json_data(text: str | bytes, source: str, exit_code: int = EXIT_DATA, max_depth: int = JSON_MAX_DEPTH) -> Any:
    """JSON text as data; bad JSON (with its line), nesting deeper than `max_depth` or a number too long to
    convert is one line naming `source`."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        at = f" at line {exc.lineno}" if "\n" in str(text).strip() else ""  # a JSON line is named by `source`
        raise UserError(f"{source}: not valid JSON ({exc.msg}{at})", exit_code=exit_code) from None
    except RecursionError:
        raise UserError(f"{source}: JSON nested deeper than {max_depth} levels", exit_code=exit_code) from None
    except (ValueError, UnicodeDecodeError) as exc:  # e.g. an integer of more than 4,300 digits, bad UTF-8
        raise UserError(f"{source}: not valid JSON ({shorten(str(exc))})", exit_code=exit_code) from None
    if not within_depth(data, max_depth):
        raise UserError(f"{source}: JSON nested deeper than {max_depth} levels", exit_code=exit_code)
    return data


def json_file(
    path: str | Path,
    what: str = "JSON file",
    exit_code: int = EXIT_DATA,
    max_bytes: int | None = None,
    max_depth: int = JSON_MAX_DEPTH,
) -> Any:
    """A whole JSON file (at most `max_bytes`, when given); missing, unreadable, not UTF-8 or refused by
    `json_data` is one line naming the file."""
    path = Path(path)
    text = _read_text(path, max_bytes, what, exit_code, "not UTF-8 text")
    return json_data(text, str(path), exit_code, max_depth)


def record_file(path: str | Path, what: str = "record") -> Any:
    """A JSON record vlmlab wrote into a run or study directory (which may come from someone else): bounded by
    RECORD_MAX_BYTES and JSON_MAX_DEPTH; a refusal is one line, exit 1."""
    return json_file(path, what, EXIT_DATA, RECORD_MAX_BYTES)


def jsonl_records(path: str | Path, exit_code: int = EXIT_DATA, skip_bad: bool = False) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a JSON-lines file. Lines are split on `\\n` only, so a raw
    U+2028 or U+0085 inside a string (what `json.dumps(ensure_ascii=False)` writes) stays in its record. A line
    longer than JSONL_MAX_LINE, bytes that are not UTF-8, bad JSON or nesting beyond JSON_MAX_DEPTH is one line
    naming `file:line` (`skip_bad`: such a line is skipped instead, for logs whose last line may be torn)."""
    path = Path(path)
    try:
        fh = open(path, "rb")
    except PermissionError:
        raise UserError(f"{path}: not readable (permission denied)", exit_code=exit_code) from None
    with fh:
        lineno = 0
        while True:
            raw = fh.readline(JSONL_MAX_LINE + 1)
            if not raw:
                return
            lineno += 1
            where = f"{path}:{lineno}"
            if len(raw) > JSONL_MAX_LINE and not raw.endswith(b"\n"):
                if skip_bad:
                    while raw and not raw.endswith(b"\n"):  # skip the rest of that line
                        raw = fh.readline(JSONL_MAX_LINE + 1)
                    continue
                raise UserError(f"{where}: a line longer than {JSONL_MAX_LINE >> 20} MiB", exit_code=exit_code)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                if skip_bad:
                    continue
                raise UserError(f"{where}: not UTF-8 text", exit_code=exit_code) from None
            if not line.strip():
                continue
            try:
                yield lineno, json_data(line, where, exit_code)
            except UserError:
                if not skip_bad:
                    raise


def within_depth(data: Any, limit: int) -> bool:
    """Whether parsed JSON nests at most `limit` containers deep (iterative; a long list of scalars is passed over
    in C)."""
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if type(node) is dict:
            values = node.values()
        elif type(node) is list:
            values = node
            if len(node) > 16:
                kinds = set(map(type, node))
                if dict not in kinds and list not in kinds:
                    if depth > limit:
                        return False
                    continue
        else:
            continue
        if depth > limit:
            return False
        stack.extend((v, depth + 1) for v in values if type(v) is dict or type(v) is list)
    return True


def shorten(text: str, limit: int = 200) -> str:
    """`text` cut to `limit` characters with a note of how much was left out (error details stay one readable line)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def _read_text(path: Path, limit: int | None, what: str, exit_code: int, not_utf8: str) -> str:
    """A file's UTF-8 text: missing, unreadable, over `limit` bytes or not UTF-8 (`not_utf8`) is one line."""
    if not path.is_file():
        raise UserError(f"{path}: {what} not found", exit_code=exit_code)
    try:
        return _read_bytes(path, limit, what, exit_code).decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: {not_utf8}", exit_code=exit_code) from None


def _read_bytes(path: Path, limit: int | None, what: str, exit_code: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read() if limit is None else fh.read(limit + 1)
    except PermissionError:
        raise UserError(f"{path}: not readable (permission denied)", exit_code=exit_code) from None
    except IsADirectoryError:
        raise UserError(f"{path}: a directory, not a {what}", exit_code=exit_code) from None
    if limit is not None and len(data) > limit:
        raise UserError(f"{path}: larger than {limit >> 20} MiB (not a {what})", exit_code=exit_code)
    return data
