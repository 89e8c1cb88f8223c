"""Which judge template a judge reads on a benchmark (pure judge knowledge: no spec, no cluster).

The choice, first match wins:

1. the judge's own ``template`` setting: a built-in name or a ``.yaml`` file, or a mapping
   benchmark name -> template (a benchmark the mapping leaves out falls through to 2),
2. the template the benchmark's definition names (``judge:``), when it is a built-in one,
3. the built-in template written for the benchmark (its ``for_benchmarks`` lists it).

Otherwise the judge cannot read the benchmark: a :class:`~trust.judges.templates.TemplateError`
says how to set one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trust.judges.templates import JudgeTemplate, TemplateError, builtin_templates, get_template

#: A judge's ``template`` setting: a template (built-in name or file), benchmark -> template, or none.
TemplateSetting = str | Mapping[str, str] | None


def template_for(setting: TemplateSetting, benchmark: Any) -> JudgeTemplate:
    """The template a judge with ``setting`` reads on ``benchmark`` (a :class:`trust.benchmarks.base.Benchmark`).

    Raises :class:`~trust.judges.templates.TemplateError` when no template fits.
    """
    chosen = setting.get(benchmark.name) if isinstance(setting, Mapping) else setting
    if chosen:
        return get_template(chosen)
    definition = getattr(benchmark, "definition", None)
    templates = builtin_templates()
    wanted = getattr(definition, "judge", None)
    if wanted in templates:
        return templates[wanted]
    for template in templates.values():
        if benchmark.name in template.for_benchmarks:
            return template
    raise TemplateError(
        f"no judge template for benchmark {benchmark.name!r}; set the judge's template "
        f"(built in: {', '.join(sorted(templates))}, or a .yaml file)"
    )
