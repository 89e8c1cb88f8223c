"""Jinja templates and expressions of benchmark definitions, with static field checks.

Templates (prompts, ids) render text; expressions (references, choices, attributes) return Python
values. Both see the record's fields by name, ``_index``, ``record`` (the whole record, for fields
that only some records have) and ``params`` (the benchmark options).
Undefined names fail loudly instead of rendering as empty text.
"""

from __future__ import annotations

import string
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

LETTERS = string.ascii_uppercase


def lettered(options: list[Any], separator: str = "\n") -> str:
    """``["x", "y"]`` -> ``"A. x\\nB. y"``."""
    return separator.join(f"{LETTERS[i]}. {text}" for i, text in enumerate(options))


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["lettered"] = lettered
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


def render(source: str, context: dict[str, Any]) -> str:
    """Render a template over ``context``."""
    template = _template(source)
    try:
        return ENV.concat(template.root_render_func(template.new_context({**_GLOBALS, **context}, shared=True)))
    except Exception:
        return ENV.handle_exception()


def evaluate(source: str, context: dict[str, Any]) -> Any:
    """Evaluate an expression over ``context``."""
    return _expression(source)(**context)


def names_in_template(source: str) -> set[str]:
    """Top-level names a template reads."""
    return meta.find_undeclared_variables(ENV.parse(source))


def names_in_expression(source: str) -> set[str]:
    """Top-level names an expression reads."""
    return meta.find_undeclared_variables(ENV.parse("{{ " + source + " }}"))
