"""Where judges run: the judge kinds (:mod:`cluster.judges.kinds`: one entry per kind, carrying its behaviour),
their workers (:mod:`cluster.judges.workers`) and an OpenAI-compatible endpoint client
(:mod:`cluster.judges.endpoint`); the model judge's workers are variant workers. What a judge asks and
how its answers are read is :mod:`trust.judges`."""
