"""A definition's ``metrics:`` compiled once: checked arguments and expressions, names, scoring.

:func:`compile_metrics` turns each entry into a :class:`CompiledMetric` (a registered function with
its validated arguments, or a parsed composite expression) and lists every problem with the field
it sits in (``metrics[2].args.label``, ``metrics[4].expr``) and the fix. :func:`compute` scores the
entries in order (composites read the metrics above them); :func:`per_item_values` gives the
per-item values of the metrics that are means over items.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trust.benchmarks.definition import BenchmarkDefinition, MetricSpec
from trust.benchmarks.records import SOURCE_FILE, is_glob
from trust.metrics.catalog import METRICS
from trust.metrics.composite import GROUP, Expression, ExpressionError, parse_expression
from trust.metrics.functions import ScoreInput, metric_names
from trust.metrics.registry import MetricInfo, Role, validate_args

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class CompiledMetric:
    """One entry of ``metrics:`` ready to score."""

    index: int
    spec: MetricSpec
    info: MetricInfo | None = None
    args: dict[str, Any] = field(default_factory=dict)
    expression: Expression | None = None

    @property
    def names(self) -> list[str]:
        """The metric names this entry produces (empty: known only from the data)."""
        return entry_names(self.spec, self.args)

    @property
    def dynamic(self) -> bool:
        """Whether its names depend on the data (per-group functions, ``per`` without ``values``)."""
        return not self.names


def entry_names(spec: MetricSpec, args: dict[str, Any] | None = None) -> list[str]:
    """The names one entry produces, before scoring."""
    if spec.expr is not None:
        if spec.per is None:
            return [spec.name or ""]
        return [f"{spec.name}/{value}" for value in spec.per.values or []]
    if spec.fn not in METRICS:
        return [spec.name or spec.fn or ""]
    return metric_names(spec.fn, spec.name, spec.args if args is None else {**spec.args, **args})


def item_attributes(definition: BenchmarkDefinition) -> set[str]:
    """The attribute names every item of ``definition`` carries."""
    names = set(definition.attributes)
    if definition.answer is not None and definition.answer.kind == "options":
        names.add("options")
    if is_glob(definition.data.path):
        names.add(SOURCE_FILE)
    return names


def nearest(name: str, candidates: list[str] | set[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidates, or the whole list when few are close."""
    close = difflib.get_close_matches(name, sorted(candidates), n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "valid: " + (", ".join(sorted(candidates)) or "none")


def produced_problems(definition: BenchmarkDefinition, produced: set[str]) -> list[str]:
    """The fields that name a metric (``primary_metric``, ``perspective_score.metric``) checked
    against the names the metrics ``produced``."""
    named = [("primary_metric", definition.primary_metric)]
    if definition.perspective_score is not None:
        named.append(("perspective_score.metric", definition.perspective_score.metric))
    return [
        f"{where}: no metric is named {value!r}; {nearest(value, produced)}"
        for where, value in named
        if value not in produced
    ]


def read_problems(compiled: list[CompiledMetric], produced_before: dict[int, set[str]]) -> list[str]:
    """``metric('...')`` reads of a name no earlier entry produces (``produced_before``: entry -> names above it)."""
    problems = []
    for entry in compiled:
        if entry.expression is None:
            continue
        earlier = produced_before.get(entry.index, set())
        for read in sorted(entry.expression.reads):
            if read.endswith("/"):
                found = any(name.startswith(read) for name in earlier)
            else:
                found = read in earlier
            if not found:
                problems.append(
                    f"metrics[{entry.index}].expr: metric({read.rstrip('/')!r}) is not a metric defined above it; "
                    f"{nearest(read.rstrip('/'), earlier)}"
                )
    return problems


def direction(compiled: list[CompiledMetric], name: str) -> bool | None:
    """Whether a higher value of metric ``name`` is better, as its entry (``higher_is_better``) or its
    function declares; None when neither says (or no entry produces the name)."""

    def produces(entry: CompiledMetric) -> bool:
        spec = entry.spec
        if spec.expr is not None:
            return name.startswith(f"{spec.name}/")
        return name.startswith(str(entry.args.get("prefix", "")))

    entry = next((e for e in compiled if name in e.names), None)
    if entry is None:  # a per-group name, known only from the data
        entry = next((e for e in compiled if e.dynamic and produces(e)), None)
    if entry is None:
        return None
    if entry.spec.higher_is_better is not None:
        return entry.spec.higher_is_better
    return entry.info.higher_is_better if entry.info is not None else None


def compile_metrics(definition: BenchmarkDefinition) -> tuple[list[CompiledMetric], list[str]]:
    """Compile every entry; returns the entries and one problem line per mistake (empty: all fine)."""
    problems: list[str] = []
    compiled: list[CompiledMetric] = []
    produced_at: dict[str, int] = {}
    for i, spec in enumerate(definition.metrics):
        for name in entry_names(spec):
            produced_at.setdefault(name, i)
    attributes = item_attributes(definition)
    seen: dict[str, int] = {}
    for i, spec in enumerate(definition.metrics):
        where = f"metrics[{i}]"
        entry = CompiledMetric(i, spec)
        if spec.fn is not None:
            problems.extend(_compile_function(entry, where, attributes))
        else:
            problems.extend(_compile_expression(entry, where, produced_at, attributes))
        for name in entry.names:
            if name in seen:
                problems.append(
                    f"{where}: the metric name {name!r} is already produced by metrics[{seen[name]}]; give one a 'name'"
                )
            seen.setdefault(name, i)
        compiled.append(entry)
    produced = {name for entry in compiled for name in entry.names}
    if not any(entry.dynamic for entry in compiled):  # else only the data knows every name
        problems.extend(produced_problems(definition, produced))
    before: dict[int, set[str]] = {}
    names: set[str] = set()
    for entry in compiled:
        before[entry.index] = set(names)
        names |= set(entry.names)
        if entry.dynamic:  # a read after a per-group entry is checked against the data
            break
    problems.extend(read_problems([e for e in compiled if e.index in before], before))
    return compiled, problems


def _attribute_problem(where: str, name: str, attributes: set[str]) -> str:
    known = ", ".join(sorted(attributes)) or "none"
    return f"{where}: the items have no attribute {name!r} (attributes: {known}); add it under 'attributes:' or fix the name"


def _compile_function(entry: CompiledMetric, where: str, attributes: set[str]) -> list[str]:
    spec = entry.spec
    info = METRICS.get(spec.fn or "")
    if info is None:
        return [f"{where}.fn: unknown metric function {spec.fn!r}; available: {', '.join(sorted(METRICS))}"]
    entry.info = info
    entry.args, problems = validate_args(info.name, spec.args, where)
    if problems:
        return problems
    for arg in info.args:
        value = entry.args.get(arg.name, arg.default)
        if arg.role is Role.ATTRIBUTE and value is not None and value not in attributes:
            problems.append(_attribute_problem(f"{where}.args.{arg.name}", value, attributes))
    return problems


def _compile_expression(
    entry: CompiledMetric, where: str, produced_at: dict[str, int], attributes: set[str]
) -> list[str]:
    spec = entry.spec
    problems = []
    if spec.per is not None and spec.per.attribute not in attributes:
        problems.append(_attribute_problem(f"{where}.per.attribute", spec.per.attribute, attributes))
    try:
        expression = parse_expression(spec.expr or "", frozenset({GROUP}) if spec.per else frozenset())
    except ExpressionError as err:
        return [*problems, f"{where}.expr: {err}"]
    earlier = sorted(n for n, at in produced_at.items() if at < entry.index and _IDENTIFIER.match(n))
    for name in sorted(expression.names):
        at = produced_at.get(name)
        if at is None:
            problems.append(
                f"{where}.expr: unknown name {name!r}; an expression reads metrics defined above it: {', '.join(earlier) or 'none'}"
            )
        elif at >= entry.index:
            problems.append(f"{where}.expr: {name!r} is defined later (metrics[{at}]); move this entry below it")
    for subset in expression.subsets:
        for attribute in [*subset.where, *subset.item_attributes]:
            if attribute not in attributes:
                problems.append(_attribute_problem(f"{where}.expr", attribute, attributes))
    entry.expression = expression
    return problems


def compute(compiled: list[CompiledMetric], score: ScoreInput) -> dict[str, float]:
    """Every metric, in definition order (composites read what the entries above produced)."""
    out: dict[str, float] = {}
    for entry in compiled:
        out.update(_entry_values(entry, score, out))
    return out


def names_by_entry(compiled: list[CompiledMetric], score: ScoreInput) -> dict[int, list[str]]:
    """The metric names each entry gives when scored over ``score`` (entry index -> names)."""
    out: dict[str, float] = {}
    names: dict[int, list[str]] = {}
    for entry in compiled:
        values = _entry_values(entry, score, out)
        names[entry.index] = list(values)
        out.update(values)
    return names


def _entry_values(entry: CompiledMetric, score: ScoreInput, metrics: dict[str, float]) -> dict[str, float]:
    if entry.expression is not None:
        return _composite(entry, score, metrics)
    assert entry.info is not None
    value = entry.info.fn(score, **entry.args)
    if isinstance(value, dict):
        return dict(value)
    return {entry.spec.name or entry.info.name: value}


def _composite(entry: CompiledMetric, score: ScoreInput, metrics: dict[str, float]) -> dict[str, float]:
    assert entry.expression is not None and entry.spec.name
    per = entry.spec.per
    if per is None:
        return {entry.spec.name: entry.expression.evaluate(score, metrics)}
    groups = per.values or sorted({str(v) for v in score.attribute(per.attribute) if v is not None})
    return {f"{entry.spec.name}/{g}": entry.expression.evaluate(score, metrics, {GROUP: g}) for g in groups}


def per_item_values(compiled: list[CompiledMetric], score: ScoreInput) -> dict[str, np.ndarray]:
    """Per-item values (NaN = the item does not count) of every metric that is a mean over items."""
    out: dict[str, np.ndarray] = {}
    for entry in compiled:
        if entry.info is None or entry.info.item_values is None:
            continue
        values = entry.info.item_values(score, **entry.args)
        if isinstance(values, dict):
            out.update({name: np.asarray(v, dtype=float) for name, v in values.items()})
        else:
            out[entry.spec.name or entry.info.name] = np.asarray(values, dtype=float)
    return out
