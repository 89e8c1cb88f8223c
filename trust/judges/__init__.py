"""Judges: what scores an open-ended answer (pure Python; the pools that run model judges live in ``cluster/``).

- :mod:`trust.judges.templates`: judge templates as data (YAML + Jinja), built in or user files.
- :mod:`trust.judges.template_choice`: which template a judge reads on a benchmark.
- :mod:`trust.judges.verdicts`: turning a judge's raw output into a label, robustly.
"""
