"""The registry behind ``@metric``: metric functions, their declared arguments and per-item forms.

A metric function's arguments are its signature: every parameter after the first (the
:class:`~trust.metrics.functions.ScoreInput`) becomes a field of a pydantic model built when the
function registers, so a definition's ``args`` are checked when the definition loads (unknown
argument, missing argument, wrong type). Parameters annotated with a role (:data:`Label`,
:data:`Labels`, :data:`Attribute`, :data:`AttributeValue`, :data:`ReferenceValue`) tell the
data-aware validation what to look for in the items (a label that can occur, an attribute that
exists, a value that is seen).

A metric that is a mean over items registers with :func:`mean_metric`: its function returns the
per-item values (a float array aligned with the items, NaN where an item does not count) and the
registry derives the metric as their mean. Other functions may still give per-item values for
some of their outputs through ``item_values=``.

Every metric declares its direction (``higher_is_better``, default true: accuracies, scores): false
for failure rates, gaps and differences, None where it depends on the benchmark (a refusal rate is
good on harmful prompts and bad on benign ones; a definition entry may then set it).
"""

from __future__ import annotations

import enum
import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from trust.metrics.basic import NAN


class Role(enum.Enum):
    """What an argument names, for checks against the items."""

    LABEL = "label"
    ATTRIBUTE = "attribute"
    VALUE = "attribute value"
    REFERENCE = "reference value"


Scalar = str | int | float | bool
#: One label of the answer space.
Label = Annotated[str, Role.LABEL]
#: One label, or a list of labels.
Labels = Annotated[str | list[str], Role.LABEL]
#: The name of an item attribute (``attributes:`` of the definition).
Attribute = Annotated[str, Role.ATTRIBUTE]
#: A value (or list of values) of the function's attribute argument.
AttributeValue = Annotated[Scalar | list[Scalar], Role.VALUE]
#: A value of the items' reference.
ReferenceValue = Annotated[str, Role.REFERENCE]

MetricFn = Callable[..., Any]
ItemValuesFn = Callable[..., "np.ndarray | dict[str, np.ndarray]"]


@dataclass(frozen=True)
class ArgInfo:
    """One declared argument of a metric function."""

    name: str
    type_text: str
    required: bool
    default: Any
    role: Role | None


@dataclass
class MetricInfo:
    """A registered metric function: the callable, its argument model and optional per-item values."""

    name: str
    fn: MetricFn
    doc: str
    args_model: type[BaseModel]
    args: tuple[ArgInfo, ...]
    outputs: Callable[[dict[str, Any]], list[str]] | None = None
    item_values: ItemValuesFn | None = None
    higher_is_better: bool | None = True
    #: labels the function reads by itself, beyond its label arguments (e.g. safety verdicts)
    labels: frozenset[str] = frozenset()

    def accepted(self) -> str:
        """The accepted arguments as one line, e.g. ``label (str | list[str], required), ...``."""
        if not self.args:
            return f"{self.name} takes no arguments"
        parts = [
            f"{a.name} ({a.type_text}, {'required' if a.required else 'default ' + _default_text(a.default)})"
            for a in self.args
        ]
        return f"{self.name} accepts: " + ", ".join(parts)


#: Every metric function's registration, by the name definitions use.
METRICS: dict[str, MetricInfo] = {}
#: Every metric function (the callable), by name.
METRIC_FUNCTIONS: dict[str, MetricFn] = {}
#: The first line of each function's description, by name.
METRIC_DOCS: dict[str, str] = {}


def _default_text(value: Any) -> str:
    return "null" if value is None else repr(value)


def type_text(annotation: Any) -> str:
    """A short, YAML-minded name of a type annotation (``str | list[str]``, ``null`` for None)."""
    origin = typing.get_origin(annotation)
    if annotation == Scalar:
        return "scalar"
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in typing.get_args(annotation))
    if origin is Annotated:
        return type_text(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        args = list(typing.get_args(annotation))
        scalars = list(typing.get_args(Scalar))
        if all(s in args for s in scalars):
            args = [Scalar] + [a for a in args if a not in scalars]
        return " | ".join(type_text(arg) for arg in args)
    if origin is not None:
        inner = ", ".join(type_text(arg) for arg in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def role_of(annotation: Any) -> Role | None:
    """The :class:`Role` an annotation carries (looking inside ``X | None``), if any."""
    if typing.get_origin(annotation) is Annotated:
        for extra in annotation.__metadata__:
            if isinstance(extra, Role):
                return extra
    for arg in typing.get_args(annotation):
        found = role_of(arg)
        if found is not None:
            return found
    return None


def _arguments(name: str, fn: MetricFn) -> tuple[type[BaseModel], tuple[ArgInfo, ...]]:
    hints = typing.get_type_hints(fn, include_extras=True)
    params = list(inspect.signature(fn).parameters.values())[1:]  # the first is the ScoreInput
    fields: dict[str, Any] = {}
    infos = []
    for param in params:
        annotation = hints.get(param.name, Any)
        required = param.default is inspect.Parameter.empty
        fields[param.name] = (annotation, ... if required else param.default)
        infos.append(
            ArgInfo(
                param.name, type_text(annotation), required, None if required else param.default, role_of(annotation)
            )
        )
    model = create_model(f"{name}_args", __config__=ConfigDict(extra="forbid", strict=False), **fields)
    return model, tuple(infos)


def _register(
    name: str,
    fn: MetricFn,
    signature_of: MetricFn,
    outputs: Any,
    item_values: ItemValuesFn | None,
    higher_is_better: bool | None,
    labels: frozenset[str] = frozenset(),
) -> None:
    model, infos = _arguments(name, signature_of)
    doc = (signature_of.__doc__ or "").strip()
    METRICS[name] = MetricInfo(name, fn, doc, model, infos, outputs, item_values, higher_is_better, labels)
    METRIC_FUNCTIONS[name] = fn
    METRIC_DOCS[name] = doc.splitlines()[0] if doc else ""


def metric(
    name: str,
    outputs: Callable[[dict[str, Any]], list[str]] | None = None,
    item_values: ItemValuesFn | None = None,
    higher_is_better: bool | None = True,
    labels: frozenset[str] = frozenset(),
) -> Callable[[MetricFn], MetricFn]:
    """Register a metric function under ``name``.

    ``outputs`` names what a dict-returning function yields (given its args; empty when only the
    data knows). ``item_values`` (same arguments) gives per-item values of some outputs: an array
    for a one-number function, or a dict output name -> array. ``higher_is_better``: the direction
    of every output (None: it depends on the benchmark). ``labels``: labels the function reads by
    itself (a definition's ``judge_labels`` may map onto them).
    """

    def register(fn: MetricFn) -> MetricFn:
        _register(name, fn, fn, outputs, item_values, higher_is_better, labels)
        return fn

    return register


def mean_of(values: np.ndarray) -> float:
    """The mean of the values that are not NaN (NaN when none is), summed in item order."""
    kept = [float(v) for v in values.tolist() if v == v]
    return sum(kept) / len(kept) if kept else NAN


def mean_metric(
    name: str,
    outputs: Callable[[dict[str, Any]], list[str]] | None = None,
    higher_is_better: bool | None = True,
    labels: frozenset[str] = frozenset(),
) -> Callable[[ItemValuesFn], MetricFn]:
    """Register a metric that is a mean over items: the decorated function returns the per-item
    values (an array, or a dict output name -> array) and the registered metric their mean.

    Returns the metric (floats); the per-item function stays reachable as ``.item_values``.
    """

    def register(per_item: ItemValuesFn) -> MetricFn:
        @functools.wraps(per_item)
        def value(*args: Any, **kwargs: Any) -> float | dict[str, float]:
            values = per_item(*args, **kwargs)
            if isinstance(values, dict):
                return {key: mean_of(v) for key, v in values.items()}
            return mean_of(values)

        value.item_values = per_item  # type: ignore[attr-defined]
        _register(name, value, per_item, outputs, per_item, higher_is_better, labels)
        return value

    return register


def flags(hits: list[bool], keep: list[bool] | None = None) -> np.ndarray:
    """Per-item values of a rate: 1.0 / 0.0 for each hit, NaN where ``keep`` is false."""
    values = np.asarray(hits, dtype=float)
    if keep is not None:
        values[~np.asarray(keep, dtype=bool)] = np.nan
    return values


def _hint(value: Any, expected: str) -> str:
    if isinstance(value, bool) and "str" in expected:
        return ' (YAML reads yes/no/true/false/on/off as booleans: quote the value, e.g. "yes")'
    return ""


def validate_args(fn_name: str, args: dict[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """Check a definition's ``args`` against ``fn_name``'s signature.

    Returns the validated arguments (only those given) and one problem line per mistake, each naming
    ``<where>.args.<name>`` and listing the accepted arguments.
    """
    info = METRICS[fn_name]
    by_name = {a.name: a for a in info.args}
    try:
        model = info.args_model.model_validate(args)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            arg = str(e["loc"][0]) if e["loc"] else ""
            if e["type"] == "extra_forbidden":
                problems.append(f"{where}.args.{arg}: unknown argument of {fn_name}; {info.accepted()}")
            elif e["type"] == "missing":
                problems.append(f"{where}.args.{arg}: missing required argument of {fn_name}; {info.accepted()}")
            else:
                expected = by_name[arg].type_text if arg in by_name else "?"
                given = args.get(arg)
                problems.append(
                    f"{where}.args.{arg}: {given!r} is not a {expected}{_hint(given, expected)}; {info.accepted()}"
                )
        return {}, sorted(set(problems), key=problems.index)
    values = {key: getattr(model, key) for key in model.model_fields_set}
    problems = []
    attribute = next((a.name for a in info.args if a.role is Role.ATTRIBUTE), None)
    for a in info.args:
        if a.role is Role.VALUE and a.name in values and values[a.name] is not None and attribute is not None:
            if values.get(attribute) is None:
                problems.append(f"{where}.args.{a.name}: a value needs args.{attribute} (the attribute it selects on)")
    return values, problems
