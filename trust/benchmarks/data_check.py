"""Checks of a benchmark definition against its records (``qtrust validate --data-dir``).

Without data a definition is already checked for what it says (arguments, names, expressions; see
:func:`trust.benchmarks.declarative.validate_definition`). With the records, :func:`check_definition`
also finds what only the data shows: a template that fails on some record, raw reference values
that ``reference.map`` does not cover, references outside the answer space, labels a metric names
that can never occur, and attribute values a metric selects that no item has.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trust.benchmarks.data import BenchmarkDataError
from trust.benchmarks.declarative import (
    COMPLIED,
    FULL_REFUSAL,
    PARTIAL_REFUSAL,
    DeclarativeBenchmark,
    DefinitionError,
    template_fields,
)
from trust.benchmarks.expressions import LETTERS, evaluate, render
from trust.benchmarks.metric_plan import CompiledMetric
from trust.metrics.registry import Role
from trust.types import ERROR, INVALID, REFUSED, Item

_SHOWN = 20


@dataclass
class CheckReport:
    """What :func:`check_definition` found; ``data_checked`` is false when no data folder was given."""

    problems: list[str] = field(default_factory=list)
    data_checked: bool = False
    items: int = 0


def _listing(values: Iterable[Any]) -> str:
    values = sorted({str(v) for v in values})
    more = f", ... ({len(values)} in all)" if len(values) > _SHOWN else ""
    return ", ".join(values[:_SHOWN]) + more


def answer_space(
    bench: DeclarativeBenchmark, items: list[Item] | None = None, judge_vocabulary: Iterable[str] = ()
) -> set[str] | None:
    """Every label scoring can see: parsed labels, REFUSED / INVALID / ERROR, the definition's
    ``judge_labels`` targets and the (mapped) labels of the judges in ``judge_vocabulary``.

    ``None`` when the space depends on data that was not given (options letters, log-likelihood choices).
    """
    d = bench.definition
    space = {ERROR, *d.judge_labels.values()}
    space |= {d.judge_labels.get(label, label) for label in judge_vocabulary}
    if d.task == "loglikelihood":
        if items is None:
            return None
        return space | {choice for item in items for choice in item.choices or []}
    answer = d.answer
    assert answer is not None
    space.add(INVALID)
    if answer.kind == "open":
        return space | ({FULL_REFUSAL, PARTIAL_REFUSAL, COMPLIED} if answer.refusal_kinds else {REFUSED, COMPLIED})
    if answer.kind == "short":
        return None  # any normalised text
    if answer.refusal:
        space.add(REFUSED)
    if answer.kind == "labels":
        return space | set(answer.labels)
    if items is None:
        return None
    most = max((len(json.loads(item.attributes.get("options", "[]"))) for item in items), default=0)
    return space | set(LETTERS[:most])


def _named_labels(entry: CompiledMetric) -> list[tuple[str, str]]:
    """(field, label) for every label a metric entry names."""
    out = []
    if entry.info is not None:
        for arg in entry.info.args:
            value = entry.args.get(arg.name)
            if arg.role is Role.LABEL and value is not None:
                for label in value if isinstance(value, list) else [value]:
                    out.append((f"metrics[{entry.index}].args.{arg.name}", str(label)))
    if entry.expression is not None:
        out += [(f"metrics[{entry.index}].expr", label) for s in entry.expression.subsets for label in s.labels]
    return out


def label_problems(bench: DeclarativeBenchmark, space: set[str]) -> list[str]:
    """Labels that metrics name but that can never occur."""
    problems = []
    for entry in bench.compiled_metrics:
        for where, label in _named_labels(entry):
            if label not in space:
                problems.append(
                    f"{where}: label {label!r} can never occur: the answer space is {_listing(space)}; "
                    "fix the label or the answer labels"
                )
    return problems


def _selected_values(entry: CompiledMetric) -> list[tuple[str, str, list[str]]]:
    """(field, attribute or '<reference>', values) a metric entry selects on."""
    out: list[tuple[str, str, list[str]]] = []
    if entry.info is not None:
        attribute = next((entry.args.get(a.name) for a in entry.info.args if a.role is Role.ATTRIBUTE), None)
        for arg in entry.info.args:
            value = entry.args.get(arg.name)
            if value is None:
                continue
            values = [str(v) for v in (value if isinstance(value, list) else [value])]
            if arg.role is Role.VALUE and attribute is not None:
                out.append((f"metrics[{entry.index}].args.{arg.name}", str(attribute), values))
            elif arg.role is Role.REFERENCE:
                out.append((f"metrics[{entry.index}].args.{arg.name}", "<reference>", values))
    if entry.expression is not None:
        for subset in entry.expression.subsets:
            for attribute, wanted in subset.where.items():
                if wanted:
                    out.append((f"metrics[{entry.index}].expr", attribute, wanted))
        per = entry.spec.per
        if per is not None and per.values:
            out.append((f"metrics[{entry.index}].per.values", per.attribute, list(per.values)))
    return out


def value_problems(bench: DeclarativeBenchmark, items: list[Item]) -> list[str]:
    """Attribute (and reference) values metrics select on that no item has."""
    problems = []
    for entry in bench.compiled_metrics:
        for where, attribute, values in _selected_values(entry):
            if attribute == "<reference>":
                seen = {str(item.reference) for item in items if item.reference is not None}
                what = "reference"
            else:
                seen = {item.attributes[attribute] for item in items if attribute in item.attributes}
                what = f"attribute {attribute!r}"
            for value in values:
                if value not in seen:
                    problems.append(
                        f"{where}: no item has {what} = {value!r} (values seen: {_listing(seen) or 'none'}); fix the value"
                    )
    return problems


def _failing_field(bench: DeclarativeBenchmark, record: dict[str, Any]) -> str:
    """The first template field that fails on ``record`` (for the message)."""
    context = bench.template_context(record)
    for name, source, is_expression in template_fields(bench.definition):
        if name == "data.path":
            continue
        try:
            (evaluate if is_expression else render)(source, context)
        except Exception:
            return name
    return "item"


def _items(bench: DeclarativeBenchmark, records: list[dict[str, Any]], data_dir: Path) -> tuple[list[Item], list[str]]:
    d = bench.definition
    if d.reference is not None and d.reference.map is not None:
        raw: dict[str, int] = {}
        for record in records:
            raw.setdefault(str(bench.reference_of(record)), record["_index"])
        missing = {value: at for value, at in raw.items() if value not in d.reference.map}
        if missing:
            first = min(missing.values())
            return [], [
                f"reference.map: raw reference value(s) {_listing(missing)} are not mapped (first at record "
                f"{first}); add them to reference.map (it maps {_listing(d.reference.map)})"
            ]
    pool = bench.demonstration_pool(data_dir)
    items: list[Item] = []
    seen: set[str] = set()
    for position, record in enumerate(records):
        try:
            item = bench.item(record, pool)
        except Exception as err:
            return items, [
                f"{_failing_field(bench, record)}: fails on record {position} (_index {record['_index']}): {err}"
            ]
        if item.id in seen:
            return items, [f"id: item id {item.id!r} repeats (record {position}); make 'id' unique per record"]
        seen.add(item.id)
        items.append(item)
    return items, []


def check_definition(
    bench: DeclarativeBenchmark, data_dir: Path | None, judge_vocabulary: Iterable[str] = ()
) -> CheckReport:
    """Check ``bench`` against its records in ``data_dir`` (only the data-free label checks when None).

    ``judge_vocabulary``: the raw labels of the judges a sweep runs on this benchmark.
    """
    vocabulary = list(judge_vocabulary)
    if data_dir is None:
        space = answer_space(bench, None, vocabulary)
        return CheckReport(label_problems(bench, space) if space is not None else [])
    report = CheckReport(data_checked=True)
    try:
        records = bench.records(data_dir)
        if not records:
            report.problems.append(
                "data: no records (after data.where and data.drop_null); check the file and the filters"
            )
            return report
        bench.check_fields(records[0])
        items, problems = _items(bench, records, Path(data_dir))
    except DefinitionError as err:
        report.problems.extend(err.problems)
        return report
    except BenchmarkDataError as err:
        folder = bench.definition.source_folder
        fetch = (
            f"; `qtrust data fetch {folder} --dest {data_dir}` downloads the folder's files"
            if folder and "expected the data file" in str(err)
            else ""
        )
        report.problems.append(f"data: {err}{fetch}")
        return report
    except Exception as err:
        report.problems.append(f"data: {type(err).__name__}: {err}")
        return report
    report.items = len(items)
    report.problems.extend(problems)
    if problems:
        return report
    space = answer_space(bench, items, vocabulary)
    if space is not None:  # None: free-text answers (short answers), any text
        outside = {item.reference for item in items if item.reference is not None} - space
        if outside:
            report.problems.append(
                f"reference: value(s) {_listing(outside)} are not in the answer space ({_listing(space)}); "
                "map them with reference.map or fix the answer labels"
            )
        report.problems.extend(label_problems(bench, space))
    report.problems.extend(value_problems(bench, items))
    return report
