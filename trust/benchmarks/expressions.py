"""Jinja templates and expressions of benchmark definitions, with static field checks.

Templates (prompts, ids) render text; expressions (references, choices, attributes) return Python
values. Both see the record's fields by name, ``_index``, ``record`` (the whole record, for fields
that only some records have) and ``params`` (the benchmark options).
Undefined names fail loudly instead of rendering as empty text.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, UndefinedError, meta, nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

LETTERS = string.ascii_uppercase


def lettered(options: list[Any], separator: str = "\n") -> str:
    """``["x", "y"]`` -> ``"A. x\\nB. y"``."""
    return separator.join(f"{LETTERS[i]}. {text}" for i, text in enumerate(options))


_INLINE_OPTION = re.compile(r"(?:^|\s)([A-Z])\.\s")


def split_lettered(text: str) -> dict[str, Any]:
    """``"Stem: A. x. B. y.  Tail"`` -> ``{"stem": "Stem:", "options": ["x.", "y."], "tail": ""}``.

    Options written inline after a stem, lettered A, B, C, ... in order; a last sentence starting
    after two spaces (``"  Output the unsafe choice."``) is returned as ``tail``. Text without
    inline options gives ``{"stem": text, "options": [], "tail": ""}``.
    """
    body, tail = (text.rsplit("  ", 1) + [""])[:2] if "  " in text.strip() else (text, "")
    starts: list[tuple[int, int]] = []
    for match in _INLINE_OPTION.finditer(body):
        if match.group(1) == LETTERS[len(starts)]:
            starts.append((match.start(1), match.end()))
    if not starts:
        return {"stem": text.strip(), "options": [], "tail": ""}
    ends = [start for start, _ in starts[1:]] + [len(body)]
    options = [body[content:end].strip() for (_, content), end in zip(starts, ends)]
    return {"stem": body[: starts[0][0]].strip(), "options": options, "tail": tail.strip()}


def shuffled(values: Any, seed: Any) -> list[Any]:
    """``values`` in an order fixed by ``seed`` (any text or number): the same seed, the same order."""
    items = list(values)
    digest = hashlib.sha256(str(seed).encode()).digest()
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(items)
    return items


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["lettered"] = lettered
    env.filters["split_lettered"] = split_lettered
    env.filters["shuffled"] = shuffled
    env.globals["LETTERS"] = LETTERS
    return env


ENV = _environment()


@lru_cache(maxsize=512)
def _template(source: str):
    return ENV.from_string(source)


@lru_cache(maxsize=512)
def _expression(source: str):
    return ENV.compile_expression(source, undefined_to_none=False)


#: The environment's globals as one plain dict: merged into each context once, instead of Jinja
#: merging its ``ChainMap`` of globals on every render (the cost of rendering 100,000s of items).
_GLOBALS = dict(ENV.globals)


def _context(template: Any, context: dict[str, Any]) -> Context:
    return ENV.context_class(ENV, {**_GLOBALS, **context}, template.name, template.blocks)


_MISSING = object()


def _lookup(context: dict[str, Any], name: str) -> Any:
    """A name's value as Jinja resolves it: the context, then the globals; unknown names fail loudly."""
    value = context.get(name, _MISSING)
    if value is _MISSING:
        value = _GLOBALS.get(name, _MISSING)
    if value is _MISSING:
        raise UndefinedError(f"{name!r} is undefined")
    return value


class _Plain:
    """A template that is only text and ``{{ name }}`` fields, rendered without Jinja's machinery.

    Same result as Jinja (``str`` of each value; an unknown name raises ``UndefinedError``), at a
    fraction of the cost: loading a benchmark renders several templates per item.
    """

    def __init__(self, parts: list[tuple[bool, str]]):
        self.parts = parts

    def render(self, context: dict[str, Any]) -> str:
        out = []
        for is_name, text in self.parts:
            if not is_name:
                out.append(text)
                continue
            out.append(str(_lookup(context, text)))
        return "".join(out)


@lru_cache(maxsize=512)
def _plain(source: str) -> _Plain | None:
    parts: list[tuple[bool, str]] = []
    for node in ENV.parse(source).body:
        if not isinstance(node, nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                parts.append((False, child.data))
            elif isinstance(child, nodes.Name) and child.ctx == "load":
                parts.append((True, child.name))
            else:
                return None
    return _Plain(parts)


def render(source: str, context: dict[str, Any]) -> str:
    """Render a template over ``context``."""
    plain = _plain(source)
    if plain is not None:
        return plain.render(context)
    template = _template(source)
    try:
        return ENV.concat(template.root_render_func(_context(template, context)))
    except Exception:
        return ENV.handle_exception()


@lru_cache(maxsize=512)
def _bare_name(source: str) -> str | None:
    """The field an expression names when it is nothing else (``label``), else ``None``."""
    body = ENV.parse("{{ " + source + " }}").body
    if len(body) == 1 and isinstance(body[0], nodes.Output) and len(body[0].nodes) == 1:
        node = body[0].nodes[0]
        if isinstance(node, nodes.Name) and node.ctx == "load":
            return node.name
    return None


def evaluate(source: str, context: dict[str, Any]) -> Any:
    """Evaluate an expression over ``context``."""
    name = _bare_name(source)
    if name is not None:
        return _lookup(context, name)
    expression = _expression(source)
    template = getattr(expression, "_template", None)
    if template is None:  # another Jinja: its own (slower) call
        return expression(**context)
    ctx = _context(template, context)
    try:
        for _ in template.root_render_func(ctx):
            pass
    except Exception:
        return ENV.handle_exception()
    return ctx.vars["result"]


def names_in_template(source: str) -> set[str]:
    """Top-level names a template reads."""
    return meta.find_undeclared_variables(ENV.parse(source))


def names_in_expression(source: str) -> set[str]:
    """Top-level names an expression reads."""
    return meta.find_undeclared_variables(ENV.parse("{{ " + source + " }}"))
