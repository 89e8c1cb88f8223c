"""Render the reference of every registered metric function (``docs/metric-functions.md``).

The page is generated from the registry, so it always says what the code accepts. Regenerate it
after adding or changing a metric function::

    python -m trust.metrics.docs
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from trust.metrics.catalog import METRICS
from trust.metrics.registry import MetricInfo

#: Where the generated page lives in the repository.
DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "metric-functions.md"

_HEADER = """\
# Metric functions

<!-- Generated from the registry by `python -m trust.metrics.docs`; do not edit by hand. -->

The functions a benchmark definition names under `metrics:` (`{fn: NAME, args: {...}}`). Each
function's arguments come from its signature and are checked when the definition loads: an
unknown argument, a missing one or a wrong type is an error naming `metrics[i].args.<name>`.
The *names* column says what an argument refers to; with data (`qtrust validate --data-dir`)
a label must be able to occur, an attribute must exist and a value must be seen in the items.
Functions marked *per item* are means over items: `qtrust` can give their per-item values
(`trust.benchmarks.label_metrics.item_values`) for intervals and paired tests. Composite metrics (`expr:`) are
described in [benchmark-definitions.md](benchmark-definitions.md). Each function declares its direction
(tables, flags and the ensemble search read it); a definition entry may set `higher_is_better` where the
function's depends on the benchmark (a refusal rate) or to turn it round. Add a function with
`@metric` / `@mean_metric` in `trust/metrics/functions.py` or a module of `trust/metrics/packs/`.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_function(info: MetricInfo) -> str:
    """The section of one function: description, outputs, arguments table."""
    lines = [f"## `{info.name}`", ""]
    lines.append(inspect.cleandoc(info.doc) if info.doc else "(no description)")
    lines.append("")
    facts = []
    if info.item_values is not None:
        whole = getattr(info.fn, "item_values", None) is info.item_values
        facts.append("per item" if whole else "per item for some of its outputs")
    if info.outputs is not None:
        facts.append("returns several metrics (the `name` of the entry is not used)")
    facts.append(
        {True: "higher is better", False: "lower is better", None: "direction depends on the benchmark"}[
            info.higher_is_better
        ]
    )
    if info.labels:
        facts.append("reads the labels " + ", ".join(f"`{label}`" for label in sorted(info.labels)))
    if facts:
        lines += [f"*{'; '.join(facts)}*", ""]
    if not info.args:
        lines += ["No arguments.", ""]
        return "\n".join(lines)
    lines += ["| argument | type | default | names |", "|---|---|---|---|"]
    for arg in info.args:
        default = "required" if arg.required else ("null" if arg.default is None else f"`{arg.default!r}`")
        role = f"a {arg.role.value}" if arg.role is not None else ""
        lines.append(f"| `{arg.name}` | {_cell(arg.type_text)} | {default} | {role} |")
    lines.append("")
    return "\n".join(lines)


def render_metric_docs() -> str:
    """The whole page, functions in name order."""
    sections = [render_function(METRICS[name]) for name in sorted(METRICS)]
    return _HEADER + "\n" + "\n".join(sections).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the page (or, with ``--check``, exit 1 when the committed page is out of date)."""
    args = sys.argv[1:] if argv is None else argv
    text = render_metric_docs()
    if "--check" in args:
        current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.is_file() else ""
        return 0 if current == text else 1
    DOC_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {DOC_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
