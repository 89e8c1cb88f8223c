"""Composite metrics: an arithmetic expression over earlier metrics and counts of labels in subsets.

A definition entry ``{name: safety_score, expr: "refusal_unsafe * (1 - over_refusal)"}`` computes a
metric from metrics defined above it. The expression language is a small, safe subset of Python
arithmetic, parsed once when the definition loads and evaluated by walking its syntax tree (no
``eval``):

- numbers, ``+ - * / **``, parentheses, unary minus;
- names of metrics defined earlier in the same definition (and ``group`` inside a ``per`` entry:
  the value of the ``per`` attribute being scored);
- ``count(label=..., not_label=..., correct=..., where={attr: value or [values]})``: how many items
  of the subset ``where`` selects (all items without it) have a label in ``label``, not in
  ``not_label``, and (``correct=True`` / ``False``) a label equal / not equal to the reference;
  ``label`` and ``not_label`` may name an item attribute, ``item.<attribute>``, to compare each
  item's label with its own value (BBQ's biased option differs per item:
  ``count(label=item.biased_option)``);
- ``rate(...)``: ``count(...)`` divided by ``n(where=...)`` of the same subset;
- ``n(where=...)``: the size of a subset;
- ``metric('name')``: an earlier metric by its full name, for names that are not identifiers (the
  per-group metrics ``accuracy/ambiguous`` of a ``per`` entry or a per-group function);
  ``metric('accuracy', group)`` inside a ``per`` entry reads ``accuracy/<the group being scored>``;
- ``min``, ``max``, ``abs``.

Division by zero, an empty subset in ``rate`` and any NaN operand give NaN, never an exception.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trust.metrics.basic import NAN
from trust.metrics.functions import ScoreInput

#: The name a ``per`` entry binds to the attribute value being scored.
GROUP = "group"
#: Functions an expression may call, with the keyword arguments they take.
SUBSET_FUNCTIONS: dict[str, frozenset[str]] = {
    "count": frozenset({"label", "not_label", "correct", "where"}),
    "rate": frozenset({"label", "not_label", "correct", "where"}),
    "n": frozenset({"where"}),
}
NUMBER_FUNCTIONS = frozenset({"min", "max", "abs"})
#: Reads an earlier metric by its full name: ``metric('accuracy/ambiguous')``.
METRIC_FUNCTION = "metric"
#: The name that prefixes an item attribute in ``label=`` / ``not_label=``: ``item.biased_option``.
ITEM = "item"
_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)
_HELP = (
    "expressions use numbers, + - * / **, parentheses, earlier metric names, "
    "count(label=, not_label=, correct=, where={attr: value}), rate(...), n(where=...), metric('name'), "
    "min, max, abs; label= may be item.<attribute>"
)


class ExpressionError(ValueError):
    """An expression that cannot be evaluated; the message says what to change."""


@dataclass
class Subset:
    """The constant parts of one ``count`` / ``rate`` / ``n`` call (for checks against the data)."""

    labels: list[str] = field(default_factory=list)
    #: item attributes compared with the label (``label=item.biased_option``).
    item_attributes: list[str] = field(default_factory=list)
    #: attribute -> the constant values named (None: a value bound at scoring time, e.g. ``group``).
    where: dict[str, list[str] | None] = field(default_factory=dict)


@dataclass
class Expression:
    """A parsed composite expression: the metric names it reads and the subsets it counts."""

    source: str
    tree: ast.Expression
    names: set[str]
    subsets: list[Subset]
    #: full metric names read with ``metric('...')`` (a per-group read ``metric('x', group)`` gives ``x/``).
    reads: set[str] = field(default_factory=set)

    def evaluate(
        self, score: ScoreInput, metrics: Mapping[str, float], bindings: Mapping[str, str] | None = None
    ) -> float:
        """The value over ``score``'s items, reading earlier ``metrics`` and bound names (``group``)."""
        return float(_Evaluator(score, metrics, dict(bindings or {})).number(self.tree.body))


def parse_expression(source: str, bound: frozenset[str] = frozenset()) -> Expression:
    """Parse and check ``source``; ``bound`` are names given values at scoring time (``group``).

    Raises :class:`ExpressionError` on a syntax error or a construct outside the language.
    """
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as err:
        raise ExpressionError(f"not a valid expression ({err.msg} at column {err.offset}); {_HELP}") from None
    checker = _Checker(bound)
    checker.number(tree.body)
    return Expression(source, tree, checker.names, checker.subsets, checker.reads)


def _describe(node: ast.AST) -> str:
    return ast.unparse(node) if hasattr(ast, "unparse") else type(node).__name__


class _Checker:
    """Walks the tree once at load time: allowed constructs only, numbers where numbers are needed."""

    def __init__(self, bound: frozenset[str]):
        self.bound = bound
        self.names: set[str] = set()
        self.subsets: list[Subset] = []
        self.reads: set[str] = set()

    def number(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return
        if isinstance(node, ast.Name):
            if node.id in self.bound:
                raise ExpressionError(
                    f"'{node.id}' is the value of the per attribute (text), not a number; use it in where={{...}}"
                )
            self.names.add(node.id)
            return
        if isinstance(node, ast.BinOp) and isinstance(node.op, _OPERATORS):
            self.number(node.left)
            self.number(node.right)
            return
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            self.number(node.operand)
            return
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            self.call(node)
            return
        raise ExpressionError(f"'{_describe(node)}' is not allowed; {_HELP}")

    def call(self, node: ast.Call) -> None:
        name = node.func.id  # type: ignore[attr-defined]
        if name == METRIC_FUNCTION:
            self.metric_read(node)
            return
        if name in NUMBER_FUNCTIONS:
            if node.keywords or not node.args or (name == "abs" and len(node.args) != 1):
                raise ExpressionError(
                    f"{name}() takes {'one number' if name == 'abs' else 'numbers'} as positional arguments"
                )
            for arg in node.args:
                self.number(arg)
            return
        if name not in SUBSET_FUNCTIONS:
            raise ExpressionError(
                f"unknown function {name}(); available: "
                f"{', '.join(sorted([*SUBSET_FUNCTIONS, *NUMBER_FUNCTIONS, METRIC_FUNCTION]))}"
            )
        if node.args:
            raise ExpressionError(
                f"{name}() takes keyword arguments only ({', '.join(sorted(SUBSET_FUNCTIONS[name]))})"
            )
        subset = Subset()
        for keyword in node.keywords:
            if keyword.arg not in SUBSET_FUNCTIONS[name]:
                raise ExpressionError(
                    f"{name}() has no argument '{keyword.arg}'; it takes {', '.join(sorted(SUBSET_FUNCTIONS[name]))}"
                )
            if keyword.arg in ("label", "not_label"):
                attribute = _item_attribute(keyword.value)
                if attribute is not None:
                    subset.item_attributes.append(attribute)
                else:
                    subset.labels.extend(self.texts(keyword.value, f"{name}({keyword.arg}=...)"))
            elif keyword.arg == "correct":
                if not (isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, bool)):
                    raise ExpressionError(f"{name}(correct=...) must be True or False")
            else:
                subset.where = self.where(keyword.value, name)
        self.subsets.append(subset)

    def metric_read(self, node: ast.Call) -> None:
        """``metric('name')`` or, in a ``per`` entry, ``metric('name', group)``."""
        usage = "metric() takes a quoted metric name, e.g. metric('accuracy/ambiguous'), or metric('accuracy', group) in a per entry"
        first = node.args[0] if node.args else None
        if node.keywords or not 1 <= len(node.args) <= 2 or not isinstance(first, ast.Constant):
            raise ExpressionError(usage)
        if not isinstance(first.value, str) or not first.value:
            raise ExpressionError(usage)
        if len(node.args) == 2:
            second = node.args[1]
            if not (isinstance(second, ast.Name) and second.id in self.bound):
                hint = " ('group' is bound only in an entry with 'per:')" if isinstance(second, ast.Name) else ""
                raise ExpressionError(usage + hint)
            self.reads.add(first.value + "/")
            return
        self.reads.add(first.value)

    def texts(self, node: ast.AST, where: str) -> list[str]:
        """A text, a bound name or a list of texts; returns the constant texts."""
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, (str, int, float))
            and not isinstance(node.value, bool)
        ):
            return [str(node.value)]
        if isinstance(node, ast.Name) and node.id in self.bound:
            return []
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == ITEM:
            raise ExpressionError(f"{where}: item.{node.attr} is allowed only in label= and not_label=")
        if isinstance(node, ast.Name):
            hint = " ('group' is bound only in an entry with 'per:')" if node.id == GROUP else ""
            raise ExpressionError(f"{where}: unknown name '{node.id}'{hint}; quote a text value")
        if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
            return [text for element in node.elts for text in self.texts(element, where)]
        raise ExpressionError(f"{where} takes a quoted text or a list of them, not '{_describe(node)}'")

    def where(self, node: ast.AST, name: str) -> dict[str, list[str] | None]:
        if not isinstance(node, ast.Dict) or not node.keys:
            raise ExpressionError(f"{name}(where=...) takes a mapping such as {{'context': 'ambiguous'}}")
        out: dict[str, list[str] | None] = {}
        for key, value in zip(node.keys, node.values):
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                raise ExpressionError(
                    f"{name}(where=...) keys are quoted attribute names, not '{_describe(key) if key else '**'}'"
                )
            texts = self.texts(value, f"{name}(where={{'{key.value}': ...}})")
            bound = isinstance(value, ast.Name) or (
                isinstance(value, (ast.List, ast.Tuple)) and any(isinstance(e, ast.Name) for e in value.elts)
            )
            out[key.value] = None if bound else texts
        return out


def _item_attribute(node: ast.AST) -> str | None:
    """The attribute of ``item.<attribute>``, else None."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == ITEM:
        return node.attr
    return None


@dataclass(frozen=True)
class _ItemValue:
    """``item.<attribute>`` at scoring time: each item's own value of the attribute."""

    attribute: str


class _Evaluator:
    def __init__(self, score: ScoreInput, metrics: Mapping[str, float], bindings: dict[str, str]):
        self.score = score
        self.metrics = metrics
        self.bindings = bindings

    def number(self, node: ast.AST) -> float:
        if isinstance(node, ast.Constant):
            assert isinstance(node.value, (int, float)), node.value
            return float(node.value)
        if isinstance(node, ast.Name):
            value = self.metrics.get(node.id, NAN)
            return NAN if value is None else float(value)
        if isinstance(node, ast.UnaryOp):
            value = self.number(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp):
            return _arithmetic(node.op, self.number(node.left), self.number(node.right))
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        name = node.func.id
        if name == METRIC_FUNCTION:
            first = node.args[0]
            assert isinstance(first, ast.Constant)
            key = str(first.value)
            if len(node.args) == 2:
                key = f"{key}/{self.value(node.args[1])}"
            value = self.metrics.get(key, NAN)
            return NAN if value is None else float(value)
        if name in NUMBER_FUNCTIONS:
            values = [self.number(arg) for arg in node.args]
            if any(math.isnan(v) for v in values):
                return NAN
            return abs(values[0]) if name == "abs" else float(min(values) if name == "min" else max(values))
        kwargs = {k.arg: self.value(k.value) for k in node.keywords if k.arg is not None}
        inside = self.inside(kwargs.get("where") or {})
        if name == "n":
            return float(sum(1 for keep in inside if keep))
        hits = float(sum(1 for keep, ok in zip(inside, self.hits(kwargs)) if keep and ok))
        if name == "count":
            return hits
        total = sum(inside)
        return hits / total if total else NAN

    def value(self, node: ast.AST) -> Any:
        attribute = _item_attribute(node)
        if attribute is not None:
            return _ItemValue(attribute)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self.bindings[node.id]
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.value(element) for element in node.elts]
        assert isinstance(node, ast.Dict)
        return {key.value: self.value(value) for key, value in zip(node.keys, node.values)}  # type: ignore[union-attr]

    def inside(self, where: dict[str, Any]) -> list[bool]:
        keep = [True] * len(self.score.items)
        for attribute, wanted in where.items():
            keep = [k and w for k, w in zip(keep, self.score.where(attribute, wanted))]
        return keep

    def hits(self, kwargs: dict[str, Any]) -> list[bool]:
        def texts(value: Any) -> set[str] | _ItemValue | None:
            if value is None or isinstance(value, _ItemValue):
                return value
            return {str(v) for v in value} if isinstance(value, list) else {str(value)}

        def among(label: str, wanted: set[str] | _ItemValue, attributes: Mapping[str, Any]) -> bool:
            if isinstance(wanted, _ItemValue):
                own = attributes.get(wanted.attribute)
                return own is not None and label == str(own)
            return label in wanted

        labels, not_labels, correct = texts(kwargs.get("label")), texts(kwargs.get("not_label")), kwargs.get("correct")
        out = []
        for item, label in zip(self.score.items, self.score.labels):
            ok = (labels is None or among(label, labels, item.attributes)) and (
                not_labels is None or not among(label, not_labels, item.attributes)
            )
            if correct is not None:
                ok = ok and ((label == item.reference) == correct)
            out.append(ok)
        return out


def _arithmetic(op: ast.operator, left: float, right: float) -> float:
    if math.isnan(left) or math.isnan(right):
        return NAN
    try:
        if isinstance(op, ast.Add):
            return left + right
        if isinstance(op, ast.Sub):
            return left - right
        if isinstance(op, ast.Mult):
            return left * right
        if isinstance(op, ast.Div):
            return left / right if right != 0 else NAN
        result = left**right
        return float(result) if not isinstance(result, complex) else NAN
    except (OverflowError, ZeroDivisionError, ValueError):
        return NAN
