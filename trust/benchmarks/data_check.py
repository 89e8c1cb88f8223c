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
    FieldFailure,
)
from trust.benchmarks.definition import DataSource
from trust.benchmarks.expressions import LETTERS
from trust.benchmarks.metric_plan import CompiledMetric, nearest, produced_problems, read_problems
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
    bench: DeclarativeBenchmark,
    items: list[Item] | None = None,
    judge_vocabulary: Iterable[str] = (),
    with_targets: bool = True,
) -> set[str] | None:
    """Every label scoring can see: parsed labels, REFUSED / INVALID / ERROR, the definition's
    ``judge_labels`` targets (unless ``with_targets`` is false) and the (mapped) labels of the judges
    in ``judge_vocabulary``.

    ``None`` when the space depends on data that was not given (options letters, log-likelihood choices).
    """
    d = bench.definition
    space = {ERROR, *(d.judge_labels.values() if with_targets else ())}
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


def target_problems(bench: DeclarativeBenchmark, items: list[Item] | None) -> list[str]:
    """``judge_labels`` targets that are no label of this benchmark: not in the parser's answer space,
    not named by a metric and not read by a metric function (a typo would silently count nowhere)."""
    d = bench.definition
    if not d.judge_labels:
        return []
    space = answer_space(bench, items, with_targets=False)
    if space is None:  # free text (short answers) or options before the data is read: any label may be meant
        return []
    known = set(space)
    for entry in bench.compiled_metrics:
        known |= {label for _, label in _named_labels(entry)}
        if entry.info is not None:
            known |= entry.info.labels
    return [
        f"judge_labels.{label}: {target!r} is no label of this benchmark; {nearest(target, known)}"
        for label, target in d.judge_labels.items()
        if target not in known
    ]


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
        except FieldFailure as err:
            return items, [f"{err.field}: fails on record {position} (_index {record['_index']}): {err.cause}"]
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
        data_dir = beside_definition(bench)
    if data_dir is None:
        space = answer_space(bench, None, vocabulary)
        problems = label_problems(bench, space) if space is not None else []
        return CheckReport(problems + target_problems(bench, None))
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
    report.problems.extend(target_problems(bench, items))
    report.problems.extend(value_problems(bench, items))
    report.problems.extend(name_problems(bench, items))
    return report


def name_problems(bench: DeclarativeBenchmark, items: list[Item]) -> list[str]:
    """With per-group metrics only the data names every metric: ``primary_metric``,
    ``perspective_score.metric`` and ``metric('...')`` reads checked against the names scoring gives."""
    compiled = bench.compiled_metrics
    if not any(entry.dynamic for entry in compiled) or not items:
        return []  # checked when the definition loaded
    try:
        by_entry = bench.names_by_entry(items, [INVALID] * len(items))
    except Exception:  # a function that cannot score all-INVALID labels: the names stay unknown
        return []
    before: dict[int, set[str]] = {}
    names: set[str] = set()
    for entry in compiled:
        before[entry.index] = set(names)
        names |= set(by_entry.get(entry.index, []))
    return produced_problems(bench.definition, names) + read_problems(compiled, before)


def beside_definition(bench: DeclarativeBenchmark) -> Path | None:
    """The definition's folder when every file the definition reads is beside it (``./``) or absolute,
    so its records can be checked without a data folder; else None."""
    folder = bench.definition_path.parent if bench.definition_path is not None else None
    if folder is None:
        return None
    d = bench.definition
    sources: list[DataSource] = [d.data]
    if d.prompt.demonstrations is not None and d.prompt.demonstrations.pool is not None:
        sources.append(d.prompt.demonstrations.pool)
    paths = [
        p for source in sources for p in [source.path, *(j.path for j in source.join), *source.side_arrays.values()]
    ]
    if all(p.startswith("./") or Path(p).expanduser().is_absolute() for p in paths):
        return folder
    return None
