"""The one way qtrust reads a YAML file a user wrote: sweeps, judges files, benchmark definitions,
judge templates, cost-table overrides.

``yaml.safe_load`` builds no Python objects, but it still takes input that breaks everything after
it: bytes that are not UTF-8 (a ``UnicodeDecodeError``), nesting thousands of levels deep (a
``RecursionError`` in the composer), an alias bomb ("billion laughs": a few lines whose aliases
expand to billions of nodes the moment anything walks or dumps the data), an alias that contains
itself, and the same key twice in a mapping (the last one silently wins). :func:`load_yaml_file`
and :func:`load_yaml_text` refuse each of these with a :class:`YamlInputError` whose ``str()`` is one
line naming the file (and the line where it helps), and turn every YAML syntax error into such a
line too:

* text must be UTF-8 (a leading byte-order mark is allowed), the file at most 16 MiB;
* at most :data:`MAX_DEPTH` levels of nested mappings and lists, counted through aliases;
* aliases may add at most :data:`MAX_ALIAS_NODES` nodes to the document (measured on the parsed
  node graph, before anything is expanded), and an alias may not contain itself;
* a key may appear once per mapping (merge keys ``<<: *base`` still override as YAML says).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

#: The deepest nesting of mappings and lists accepted (a sweep needs fewer than 10).
MAX_DEPTH = 100
#: How many nodes aliases may add to a document when expanded (a real file shares a few settings).
MAX_ALIAS_NODES = 10_000
#: The largest file read (records live in data files; a sweep or a definition is a few kilobytes).
MAX_BYTES = 16 * 2**20

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlInputError(ValueError):
    """A YAML file qtrust refuses: ``where`` is the file, ``problem`` one line saying why and what to do."""

    def __init__(self, where: str, problem: str):
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class _TooDeep(Exception):
    def __init__(self, line: int | None):
        self.line = line


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first_line: int):
        self.key = key
        self.line = line
        self.first_line = first_line


class _StrictSafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a depth limit while composing and no duplicate keys."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _TooDeep(mark.line + 1 if mark else None)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == _MERGE_TAG:  # ``<<: *base`` merges; its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base constructor says so
                break
            if first is not None:
                raise _DuplicateKey(key, line, first)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _measure(node: Node, where: str) -> None:
    """Refuse a node graph whose aliases nest too deep, contain themselves or expand too far."""
    sizes: dict[int, tuple[int, int]] = {}  # node id -> (expanded nodes, height)
    active: set[int] = set()

    def visit(current: Node, depth: int) -> tuple[int, int]:
        key = id(current)
        known = sizes.get(key)
        if known is not None:
            if depth + known[1] - 1 > MAX_DEPTH:
                raise _TooDeep(current.start_mark.line + 1)
            return known
        if key in active:
            raise YamlInputError(
                where,
                f"line {current.start_mark.line + 1}: an alias refers to the anchor that contains it "
                "(the data would be infinite); write the values out instead",
            )
        if depth > MAX_DEPTH:
            raise _TooDeep(current.start_mark.line + 1)
        if isinstance(current, ScalarNode):
            sizes[key] = (1, 1)
            return sizes[key]
        active.add(key)
        total, height = 1, 0
        for child in _children(current):
            size, child_height = visit(child, depth + 1)
            total += size
            height = max(height, child_height)
            if total - len(sizes) > MAX_ALIAS_NODES:
                raise YamlInputError(
                    where,
                    f"line {current.start_mark.line + 1}: its aliases (*name) expand to more than "
                    f"{MAX_ALIAS_NODES:,} extra values (an alias bomb?); write the values out or share fewer",
                )
        active.discard(key)
        sizes[key] = (total, height + 1)
        return sizes[key]

    visit(node, 1)


def _syntax_line(err: yaml.YAMLError, text: str) -> str:
    """One line for a YAML error: where (line, column) and what, without PyYAML's multi-line layout."""
    if isinstance(err, yaml.reader.ReaderError):
        line = text.count("\n", 0, max(0, err.position)) + 1
        return (
            f"line {line}: not valid YAML (character #x{err.character:04x} is not allowed in YAML text: {err.reason})"
        )
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = err.problem or err.context or "syntax error"
        if err.context and problem.startswith("but "):  # "expected a single document ... but found another"
            problem = f"{err.context} {problem}"
        return " ".join(f"{where}not valid YAML ({problem})".split())
    return " ".join(f"not valid YAML ({err})".split())


def load_yaml_text(text: str, where: str) -> Any:
    """Parse ``text`` (a YAML document from ``where``) with the checks in the module docstring."""
    loader: _StrictSafeLoader | None = None
    try:
        loader = _StrictSafeLoader(text)  # the reader refuses control characters here
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node, where)
        return loader.construct_document(node)
    except _TooDeep as err:
        at = f"line {err.line}: " if err.line else ""
        raise YamlInputError(
            where, f"{at}nested more than {MAX_DEPTH} levels deep; a qtrust YAML file needs far fewer"
        ) from None
    except _DuplicateKey as err:
        raise YamlInputError(
            where,
            f"line {err.line}: key {err.key!r} appears twice in one mapping (first on line {err.first_line}); "
            "keep one of them",
        ) from None
    except yaml.YAMLError as err:
        raise YamlInputError(where, _syntax_line(err, text)) from None
    except RecursionError:  # a limit above failed to hold; still one line, never a traceback
        raise YamlInputError(where, "nested too deep to read; a qtrust YAML file needs far fewer levels") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_utf8(path: str | Path, where: str | None = None) -> str:
    """The text of ``path``; :class:`YamlInputError` when it is not UTF-8 (or cannot be read)."""
    where = where or str(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_BYTES:
            raise YamlInputError(
                where,
                f"{size / 2**20:.0f} MiB, more than any qtrust YAML file needs ({MAX_BYTES // 2**20} MiB at most)",
            )
        raw = Path(path).read_bytes()
    except IsADirectoryError:
        raise YamlInputError(where, "a folder, not a YAML file") from None
    except OSError as err:
        raise YamlInputError(where, f"cannot read it ({err.strerror or err})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise YamlInputError(
            where,
            f"not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "save it as UTF-8 (a YAML file, not a binary)",
        ) from None


def load_yaml_file(path: str | Path, where: str | None = None) -> Any:
    """Read and parse the YAML file ``path`` (``where`` names it in errors; default: the path)."""
    where = where or str(path)
    return load_yaml_text(read_utf8(path, where), where)


__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_BYTES",
    "MAX_DEPTH",
    "YamlInputError",
    "load_yaml_file",
    "load_yaml_text",
    "read_utf8",
]
