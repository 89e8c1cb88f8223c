"""``qtrust judge``: add judges to a stored sweep and judge its stored answers (no generation).

The sweep's spec (``sweep.yaml`` in its folder) gets the named judges — from its own ``judges:``
section, from a judges file, or the built-in shortcuts ``rule`` and ``rule-binary`` — on the chosen
benchmarks (default: every open-ended one), and the sweep runs with generation switched off: only
answers that lack a judgment by these judges are judged, then everything is scored and tracked
again. The updated spec is stored, so a later ``qtrust resume`` keeps the judges.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.spec.load import parse_spec
from jobs.spec.schema import SpecError, SweepSpec
from trust.benchmarks.catalog import get_benchmark
from trust.yaml_safe import YamlInputError, load_yaml_file

#: Judges every sweep can name without declaring them.
SHORTCUTS: dict[str, dict[str, Any]] = {
    "rule": {"name": "rule", "kind": "rule", "mode": "three_way"},
    "rule-binary": {"name": "rule-binary", "kind": "rule", "mode": "binary"},
}


def read_judges_file(path: Path) -> list[dict[str, Any]]:
    """A YAML list of judges (or a mapping with a ``judges:`` list), as plain data."""
    where = str(path)
    if not path.is_file():
        raise SpecError(where, ["file not found; pass a YAML file holding a list of judges (name, kind, ...)"])
    try:
        data = load_yaml_file(path)
    except YamlInputError as err:
        raise SpecError(where, [err.problem]) from None
    if isinstance(data, dict) and "judges" in data:
        data = data["judges"]
    if not isinstance(data, list) or not all(isinstance(j, dict) for j in data):
        raise SpecError(where, ["must hold a list of judges, each a mapping with at least 'name' and 'kind'"])
    return data


def is_open_ended(bench: Any) -> bool:
    benchmark = get_benchmark(bench.name, bench.options, bench.definition)
    definition = getattr(benchmark, "definition", None)
    answer = getattr(definition, "answer", None)
    return benchmark.task == "generate" and getattr(answer, "kind", None) == "open"


def with_judges(
    spec: SweepSpec, names: list[str], extra: list[dict[str, Any]], benchmarks: list[str], select: bool, source: str
) -> SweepSpec:
    """``spec`` with the named judges declared and listed on ``benchmarks`` (validated again)."""
    data = spec.model_dump(mode="json")
    declared = {j["name"]: j for j in data.get("judges", [])}
    offered = {**SHORTCUTS, **{j.get("name"): j for j in extra}}
    problems = []
    for name in names:
        if name not in declared:
            if name in offered:
                declared[name] = dict(offered[name])
            else:
                problems.append(
                    f"--judge {name}: not a judge of the sweep ({', '.join(declared) or 'none'}), "
                    f"of --judges-file, nor a shortcut ({', '.join(SHORTCUTS)})"
                )
    known = {b["alias"] or b["name"]: b for b in data["benchmarks"]}
    chosen = benchmarks or [b.run_name for b in spec.benchmarks if is_open_ended(b)]
    for name in chosen:
        if name not in known:
            problems.append(f"--benchmark {name}: not a benchmark of the sweep ({', '.join(known)})")
    if not chosen and not benchmarks:
        problems.append("the sweep has no open-ended benchmark to judge; name one with --benchmark")
    if problems:
        raise SpecError(source, problems)
    data["judges"] = list(declared.values())
    for name in chosen:
        entry = known[name]
        entry["judges"] = list(dict.fromkeys([*entry.get("judges", []), *names]))
        if select:
            entry["judge"] = names[0]
    return parse_spec(data, source)
