"""What is measured: benchmarks, prompt rendering, answer parsing, refusal detection, metrics and
precision ensembles. Pure Python: this package never imports Ray, ``cluster`` or ``jobs``."""
